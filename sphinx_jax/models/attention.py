"""The LLM's attention, by segment ids: one rule, three kernels chosen by `LlamaConfig.attention`.

A row's slots carry segment ids: 0 for padding (a segment of its own), 1, 2, ... for the samples
packed into it (an unpacked row is segment 1). A query sees a key iff both sit in the same segment
and the key's slot is not after the query's. No [B, 1, T, S] mask is an input: the XLA path builds
it inside the kernel call, the fused kernels never build it.

- 'xla': `jax.nn.dot_product_attention` with the segment mask (any platform; the CPU default).
- 'cudnn': cuDNN's fused flash attention (GPU), causal with per-row lengths: rows must hold one
  segment (training refuses packed rows with it: train.loop).
- 'splash': Pallas splash attention (TPU) with its `SegmentIds` and a causal mask; on CPU it runs in
  Pallas interpret mode (tests). Sequences that are not a multiple of its block fall back to 'xla'.

Decoding reads the cache by valid length (`attend_cache`): each row's keys up to its new token.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

SPLASH_BLOCK = 128  # the splash kernel's query and key block


def segment_mask(q_segments: jax.Array, kv_segments: jax.Array) -> jax.Array:
  """[B, 1, T, S]: same segment and key slot <= query slot (slots are positions in the row)."""
  t, s = q_segments.shape[1], kv_segments.shape[1]
  causal = jnp.arange(s)[None, :] <= jnp.arange(t)[:, None]
  same = q_segments[:, :, None] == kv_segments[:, None, :]
  return (same & causal[None])[:, None]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array, impl: str) -> jax.Array:
  """Self-attention among a call's own tokens (training, prefill): q [B, T, H, D], k/v
  [B, T, KV, D], segments int32 [B, T]. Returns [B, T, H, D]."""
  if impl == "splash" and q.shape[1] % SPLASH_BLOCK == 0:
    return _splash(q, k, v, segments)
  if impl == "cudnn":
    lengths = jnp.sum(segments > 0, axis=1, dtype=jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                        key_value_seq_lengths=lengths, implementation="cudnn")
  return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(segments, segments))


def attend_cache(q: jax.Array, k: jax.Array, v: jax.Array, lengths: jax.Array,
                 impl: str) -> jax.Array:
  """One new token per row over the cache (decoding): q [B, 1, H, D], k/v [B, S, KV, D] with the
  new token already written, `lengths` [B] each row's valid keys (its new token's slot + 1)."""
  return jax.nn.dot_product_attention(
      q, k, v, key_value_seq_lengths=lengths.astype(jnp.int32),
      implementation="cudnn" if impl == "cudnn" else None)


def _splash(q, k, v, segments):
  """Splash attention vmapped over rows; GQA's query heads share their KV head inside the kernel.
  Under a mesh the kernel runs per shard (`shard_map`: rows split as the rules table splits
  'batch', heads as 'act_kv_heads'); the compiler does not split a Pallas call."""
  d = q.shape[-1]
  interpret = _platform() != "tpu"
  q = (q * (1.0 / np.sqrt(d))).astype(q.dtype).transpose(0, 2, 1, 3)  # [B, H, T, D]
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, T, D]

  def local(q, k, v, segments):  # a shard's rows and heads
    kernel = _splash_kernel(q.shape[1], q.shape[2], interpret)
    return jax.vmap(lambda q, k, v, ids: kernel(q, k, v, splash.SegmentIds(q=ids, kv=ids)))(
        q, k, v, segments)

  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    rows, heads = nn.logical_to_mesh_axes(("batch", "act_kv_heads"))
    spec = jax.sharding.PartitionSpec
    local = jax.shard_map(local, mesh=mesh, in_specs=(
        spec(rows, heads), spec(rows, heads), spec(rows, heads), spec(rows)),
        out_specs=spec(rows, heads), check_vma=False)
  return local(q, k, v, segments).transpose(0, 2, 1, 3)


def _platform() -> str:
  """Where the call will run: the active mesh's chips (a TPU slice compiled ahead of time from a
  CPU host included), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return jax.default_backend() if device is None else device.platform


def _splash_kernel(heads: int, length: int, interpret: bool):
  mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((length, length))] * heads)
  block = min(SPLASH_BLOCK, length)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  return splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)
