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
from sphinx_jax.models.layers import fan_in_init, kernel_init, scanned


def _kernel(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
            in_axis: int | tuple[int, ...] = 0):
  """A weight of `module` created with its full shape and logical axes (initialised by its fan
  in over `in_axis`), in the compute dtype."""
  cfg = module.cfg
  return module.param(name, fan_in_init(axes, in_axis), shape, cfg.param_dtype).astype(cfg.dtype)


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
    q = jnp.einsum("btd,dhk->bthk", x,
                   _kernel(self, "wq", (d, h, hd), ("embed", "heads", "head_dim")))
    k = jnp.einsum("btd,dhk->bthk", x,
                   _kernel(self, "wk", (d, kv, hd), ("embed", "kv_heads", "head_dim")))
    v = jnp.einsum("btd,dhk->bthk", x,
                   _kernel(self, "wv", (d, kv, hd), ("embed", "kv_heads", "head_dim")))
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
    out = jnp.einsum("bthk,hkd->btd", out,
                     _kernel(self, "wo", (h, hd, d), ("heads", "head_dim", "embed"), (0, 1)))
    return out, cache


class FeedForward(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    d, f = cfg.dim, cfg.hidden_dim
    gate = x @ _kernel(self, "w1", (d, f), ("embed", "mlp"))
    up = x @ _kernel(self, "w3", (d, f), ("embed", "mlp"))
    hidden = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "act_mlp"))
    return hidden @ _kernel(self, "w2", (f, d), ("mlp", "embed"))


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
    self.output = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
                           param_dtype=cfg.param_dtype, kernel_init=fan_in_init(("embed", "vocab")))

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
