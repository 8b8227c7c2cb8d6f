"""LLaMA-2 / TinyLlama decoder: RMSNorm, interleaved RoPE, GQA, SwiGLU, static KV cache.

Weights keep Meta's layout (RoPE rotates interleaved pairs (x0, x1), (x2, x3), ...), so Meta and
LLaMA2-Accessory checkpoints load without permutation; HF checkpoints are un-permuted at
conversion. Layers are one `nn.scan`, so compile time does not grow with depth.

One forward serves training, prefill and decode: callers pass RoPE `positions`, the cache
`slots` the tokens occupy, and which key slots are valid (`kv_mask`); attention is causal in
slot order. Images (SPHINX) enter as `embeds` spliced into the token embeddings.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models import quantization
from sphinx_jax.models.layers import fan_in_init, kernel_init, scanned, zeros_init

LORA_A, LORA_B = "_lora_a", "_lora_b"  # an adapter's two factors, beside its weight


def _project(module: nn.Module, name: str, spec: str, x: jax.Array, shape: tuple[int, ...],
             axes: tuple[str, ...], n_in: int = 1) -> jax.Array:
  """`einsum(spec, x, w)` with the weight `name` of `module` (shape `shape`, logical `axes`, its
  first `n_in` axes contracted; initialised by their fan in), in the compute dtype. A quantized
  weight is dequantized here (models.quantization). With LoRA on `name` (cfg.lora_rank), plus
  the low-rank path (alpha / rank) * (x A) B, where A [inputs, rank] starts random and
  B [rank, outputs] at zero, so a fresh adapter leaves the function unchanged. Adapters keep
  float32 master weights whatever the frozen weights' dtype (they are what the optimizer
  updates)."""
  cfg = module.cfg
  w = module.param(name, fan_in_init(axes, tuple(range(n_in))), shape, cfg.param_dtype)
  y = jnp.einsum(spec, x, quantization.weight(w, cfg.dtype))
  if not cfg.lora_rank or name not in cfg.lora_targets:
    return y
  rank = cfg.lora_rank
  inputs, w_sub = spec.split("->")[0].split(",")
  x_in, w_in, w_out = inputs, w_sub[:n_in], w_sub[n_in:]
  x_rest = "".join(c for c in x_in if c not in w_in)
  a = module.param(f"{name}{LORA_A}", fan_in_init(axes[:n_in] + (None,), tuple(range(n_in))),
                   shape[:n_in] + (rank,), jnp.float32)
  b = module.param(f"{name}{LORA_B}", zeros_init((None,) + axes[n_in:]), (rank,) + shape[n_in:],
                   jnp.float32)
  low = jnp.einsum(f"{x_in},{w_in}r->{x_rest}r", x, a.astype(cfg.dtype))
  delta = jnp.einsum(f"{x_rest}r,r{w_out}->{spec.split('->')[1]}", low, b.astype(cfg.dtype))
  return y + (cfg.lora_alpha / rank) * delta


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return normed.astype(self.dtype) * scale.astype(self.dtype)


def rope_tables(positions: jax.Array, head_dim: int, theta: float, scaling: float):
  """cos/sin of shape [B, T, 1, head_dim/2] for integer positions [B, T]."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = (positions.astype(jnp.float32) / scaling)[..., None] * inv_freq
  return jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotate interleaved pairs of x [B, T, H, D] in float32, as Meta's complex form does."""
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  x0, x1 = pairs[..., 0], pairs[..., 1]
  rotated = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return rotated.reshape(x.shape).astype(x.dtype)


class Attention(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, slots, cache):
    cfg = self.cfg
    d, h, kv, hd = cfg.dim, cfg.n_heads, cfg.kv_heads, cfg.head_dim
    x = x.astype(cfg.dtype)
    q = _project(self, "wq", "btd,dhk->bthk", x, (d, h, hd), ("embed", "heads", "head_dim"))
    k = _project(self, "wk", "btd,dhk->bthk", x, (d, kv, hd), ("embed", "kv_heads", "head_dim"))
    v = _project(self, "wv", "btd,dhk->bthk", x, (d, kv, hd), ("embed", "kv_heads", "head_dim"))
    q = nn.with_logical_constraint(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
    k = apply_rope(k, cos, sin)
    if cache is not None:  # write this call's keys/values into their slots, attend to all slots
      rows = jnp.arange(x.shape[0])[:, None]
      k = cache[0].at[rows, slots].set(k.astype(cache[0].dtype))
      v = cache[1].at[rows, slots].set(v.astype(cache[1].dtype))
      cache = (k, v)
    k = nn.with_logical_constraint(k, ("batch", "cache_length", "act_kv_heads", None))
    v = nn.with_logical_constraint(v, ("batch", "cache_length", "act_kv_heads", None))
    out = jax.nn.dot_product_attention(
        q, k.astype(cfg.dtype), v.astype(cfg.dtype), mask=mask,
        implementation=None if cfg.attention == "xla" else cfg.attention)
    out = _project(self, "wo", "bthk,hkd->btd", out, (h, hd, d), ("heads", "head_dim", "embed"),
                   n_in=2)
    return out, cache


class FeedForward(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    d, f = cfg.dim, cfg.hidden_dim
    gate = _project(self, "w1", "btd,df->btf", x, (d, f), ("embed", "mlp"))
    up = _project(self, "w3", "btd,df->btf", x, (d, f), ("embed", "mlp"))
    hidden = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "act_mlp"))
    return _project(self, "w2", "btf,fd->btd", hidden, (f, d), ("mlp", "embed"))


class Head(nn.Module):
  """The output projection [dim, vocab] (untied; may be quantized, never adapted)."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    return _project(self, "kernel", "btd,dv->btv", x.astype(cfg.dtype), (cfg.dim, cfg.vocab_size),
                    ("embed", "vocab"))


class Block(nn.Module):
  """Pre-norm transformer block; scanned, so it maps (carry, *args) -> (carry, per-layer out)."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, slots, cache):
    cfg = self.cfg
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    attn, cache = Attention(cfg, name="attention")(
        norm("attention_norm")(x), cos, sin, mask, slots, cache)
    x = x + attn
    x = x + FeedForward(cfg, name="feed_forward")(norm("ffn_norm")(x))
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed")), cache


def causal_mask(slots: jax.Array, kv_mask: jax.Array) -> jax.Array:
  """[B, 1, T, S] mask: query slot i sees key slot j iff j <= i and j holds a valid token."""
  key_slots = jnp.arange(kv_mask.shape[1])
  return ((key_slots[None, None, :] <= slots[:, :, None]) & kv_mask[:, None, :])[:, None]


class Llama(nn.Module):
  """The decoder. Parameters: tok_embeddings, layers (stacked on a leading 'layers' axis), norm,
  output (untied)."""

  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.tok_embeddings = nn.Embed(
        cfg.vocab_size, cfg.dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=kernel_init(("vocab", "embed"), 1.0))
    self.layers = scanned(Block, cfg, cfg.n_layers, in_axes=(nn.broadcast,) * 4 + (0,))(cfg)
    self.norm = RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype)
    self.output = Head(cfg)

  def embed(self, tokens: jax.Array) -> jax.Array:
    return self.tok_embeddings(tokens)

  def __call__(self, tokens, *, embeds=None, positions=None, slots=None, kv_mask=None,
               cache=None, head: bool = True):
    """Logits (float32 [B, T, V]) and the updated cache; with `head=False` the final normed
    hidden states [B, T, D] instead (a chunked loss applies the head itself: models.loss).

    tokens: int [B, T]; ignored where `embeds` [B, T, D] is given.
    positions: RoPE positions [B, T] (default 0..T-1).
    slots: cache slots of these tokens [B, T] (default 0..T-1); attention is causal in slots.
    kv_mask: bool [B, S], which key slots hold real tokens (default all).
    cache: (k, v), each [L, B, S, kv_heads, head_dim], or None for a cache-free forward.
    """
    cfg = self.cfg
    x = self.embed(tokens) if embeds is None else embeds.astype(cfg.dtype)
    batch, length = x.shape[:2]
    default = jnp.broadcast_to(jnp.arange(length), (batch, length))
    positions = default if positions is None else positions
    slots = default if slots is None else slots
    n_keys = length if cache is None else cache[0].shape[2]
    kv_mask = jnp.ones((batch, n_keys), bool) if kv_mask is None else kv_mask
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    x, cache = self.layers(x, cos, sin, causal_mask(slots, kv_mask), slots, cache)
    if not head:
      return self.norm(x), cache
    logits = self.output(self.norm(x))
    logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
    return logits.astype(jnp.float32), cache


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype=None):
  shape = (cfg.n_layers, batch, length, cfg.kv_heads, cfg.head_dim)
  dtype = dtype or cfg.dtype
  return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def init_params(cfg: LlamaConfig, rng: jax.Array):
  """Boxed (logically partitioned) params; pass to `sharding.sharded_init` or `nn.unbox`."""
  return Llama(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))
