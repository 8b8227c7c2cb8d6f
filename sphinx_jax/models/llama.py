"""LLaMA-2 / TinyLlama decoder: RMSNorm, interleaved RoPE, GQA, SwiGLU, static KV cache.

Weights keep Meta's layout (RoPE rotates interleaved pairs (x0, x1), (x2, x3), ...), so Meta and
LLaMA2-Accessory checkpoints load without permutation; HF checkpoints are un-permuted at
conversion. Layers are one `nn.scan`, so compile time does not grow with depth.

One forward serves training, prefill and decode: callers pass RoPE `positions` and `segment_ids`
(models.attention: causal within a segment, padding its own segment, packed samples apart);
decoding passes the cache and each row's `cache_index`, and its new token attends to the cache by
valid length. The cache is a carry of the layer scan, written where it lies (one token per row per
decode step), never copied whole. Images (SPHINX) enter as `embeds` spliced into the token
embeddings.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models import quantization
from sphinx_jax.models.attention import attend, attend_cache
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
  def __call__(self, x, layer, cos, sin, segments, cache, index):
    """`cache` (k, v) [L, B, S, KV, D] or None; `index` None (no cache, or a prefill from slot
    0: attention among this call's tokens, written to the cache's first slots) or [B] (decode:
    each row's one new token goes to its slot `index`, then attends to the slots up to it)."""
    cfg = self.cfg
    d, h, kv, hd = cfg.dim, cfg.n_heads, cfg.kv_heads, cfg.head_dim
    x = x.astype(cfg.dtype)
    q = _project(self, "wq", "btd,dhk->bthk", x, (d, h, hd), ("embed", "heads", "head_dim"))
    k = _project(self, "wk", "btd,dhk->bthk", x, (d, kv, hd), ("embed", "kv_heads", "head_dim"))
    v = _project(self, "wv", "btd,dhk->bthk", x, (d, kv, hd), ("embed", "kv_heads", "head_dim"))
    q = nn.with_logical_constraint(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
    k = nn.with_logical_constraint(apply_rope(k, cos, sin),
                                   ("batch", "length", "act_kv_heads", None))
    if index is None:
      out = attend(q, k, v, segments, cfg.attention)
      if cache is not None:
        cache = tuple(jax.lax.dynamic_update_slice(c, new[None].astype(c.dtype),
                                                   (layer, 0, 0, 0, 0))
                      for c, new in zip(cache, (k, v)))
    else:
      rows = jnp.arange(x.shape[0])
      cache = tuple(c.at[layer, rows, index].set(new[:, 0].astype(c.dtype))
                    for c, new in zip(cache, (k, v)))
      keys, values = (nn.with_logical_constraint(
          c[layer].astype(cfg.dtype), ("batch", "cache_length", "act_kv_heads", None))
          for c in cache)
      out = attend_cache(q, keys, values, index + 1, cfg.attention)
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
  """Pre-norm transformer block; scanned over layers with (hidden states, cache) as the carry."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, carry, layer, cos, sin, segments, index):
    cfg = self.cfg
    x, cache = carry
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    attn, cache = Attention(cfg, name="attention")(
        norm("attention_norm")(x), layer, cos, sin, segments, cache, index)
    x = x + attn
    x = x + FeedForward(cfg, name="feed_forward")(norm("ffn_norm")(x))
    return (nn.with_logical_constraint(x, ("batch", "length", "act_embed")), cache), None


class Llama(nn.Module):
  """The decoder. Parameters: tok_embeddings, layers (stacked on a leading 'layers' axis), norm,
  output (untied)."""

  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.tok_embeddings = nn.Embed(
        cfg.vocab_size, cfg.dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=kernel_init(("vocab", "embed"), 1.0))
    self.layers = scanned(Block, cfg, cfg.n_layers, in_axes=(0,) + (nn.broadcast,) * 4)(cfg)
    self.norm = RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype)
    self.output = Head(cfg)

  def embed(self, tokens: jax.Array) -> jax.Array:
    return self.tok_embeddings(tokens)

  def __call__(self, tokens, *, embeds=None, positions=None, segment_ids=None, cache=None,
               cache_index=None, head: bool = True):
    """Logits (float32 [B, T, V]) and the updated cache; with `head=False` the final normed
    hidden states [B, T, D] instead (a chunked loss applies the head itself: models.loss).

    tokens: int [B, T]; ignored where `embeds` [B, T, D] is given.
    positions: RoPE positions [B, T] (default 0..T-1; packed samples restart theirs).
    segment_ids: int [B, T] (default all 1): 0 padding, 1, 2, ... the samples packed in a row.
    cache: (k, v), each [L, B, S, kv_heads, head_dim], or None for a cache-free forward.
    cache_index: None (no cache, or a prefill into slots 0..T-1) or int [B], the slot of each
      row's one new token (decoding, T = 1).
    """
    cfg = self.cfg
    x = self.embed(tokens) if embeds is None else embeds.astype(cfg.dtype)
    batch, length = x.shape[:2]
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    if segment_ids is None:
      segment_ids = jnp.ones((batch, length), jnp.int32)
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    (x, cache), _ = self.layers((x, cache), jnp.arange(cfg.n_layers), cos, sin, segment_ids,
                                cache_index)
    if not head:
      return self.norm(x), cache
    return self.head(self.norm(x)), cache

  def head(self, hidden: jax.Array) -> jax.Array:
    """float32 logits [B, T, V] of final normed hidden states [B, T, D] (`head=False`'s output):
    a prefill applies it to each row's last position only."""
    logits = nn.with_logical_constraint(self.output(hidden), ("batch", "length", "act_vocab"))
    return logits.astype(jnp.float32)


def init_cache(cfg: LlamaConfig, batch: int, length: int, dtype=None):
  shape = (cfg.n_layers, batch, length, cfg.kv_heads, cfg.head_dim)
  dtype = dtype or cfg.dtype
  return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def init_params(cfg: LlamaConfig, rng: jax.Array):
  """Boxed (logically partitioned) params; pass to `sharding.sharded_init` or `nn.unbox`."""
  return Llama(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))
