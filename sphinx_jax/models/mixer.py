"""SPHINX's mixed visual embeddings: per view, [start, Q-Former(32), ensemble(257), end].

The ensemble concatenates, per token, the channels of [CLIP ViT | ConvNeXt | DINOv2] (the light
variants drop CLIP and the Q-Former) and projects them with Linear + LayerNorm; the Q-Former's
queries get their own Linear + LayerNorm (llama_ens.py:398-445). ConvNeXt's map is upsampled by
repetition to the ViT patch grid and a mean token stands in for its missing class token.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import SphinxConfig
from sphinx_jax.util.errors import UserError


def convnext_tokens(feature_map: jax.Array, grid: int) -> jax.Array:
  """[n, g, g, C] -> [n, 1 + grid*grid, C]: cells repeated to grid x grid (repeat_interleave),
  row-major, with the mean token first."""
  factor = grid // feature_map.shape[1]
  if factor * feature_map.shape[1] != grid:
    raise UserError(f"ConvNeXt map {feature_map.shape[1:3]} does not tile the {grid}x{grid} grid")
  up = jnp.repeat(jnp.repeat(feature_map, factor, axis=1), factor, axis=2)
  tokens = up.reshape(up.shape[0], grid * grid, up.shape[-1])
  return jnp.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)


class Projection(nn.Module):
  """Linear then LayerNorm (torch eps 1e-5), into the LLM width."""

  features: int
  dtype: str
  param_dtype: str

  @nn.compact
  def __call__(self, x):
    init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "embed"))
    x = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=init,
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                 name="linear")(x)
    return nn.LayerNorm(
        epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name="norm")(x)


class Mixer(nn.Module):
  """Tower features of n views -> [n, tokens_per_view, dim] LLM embeddings."""

  cfg: SphinxConfig

  @nn.compact
  def __call__(self, *, convnext, dinov2, clip=None, qformer=None):
    llm = self.cfg.llm
    proj = lambda name: Projection(llm.dim, llm.dtype, llm.param_dtype, name=name)  # noqa: E731
    grid = self.cfg.dinov2.grid
    parts = ([] if clip is None else [clip]) + [convnext_tokens(convnext, grid), dinov2]
    dtype = jnp.dtype(llm.dtype)
    ensemble = proj("visual_proj")(jnp.concatenate([p.astype(dtype) for p in parts], axis=-1))
    tokens = [ensemble] if qformer is None else [proj("qformer_proj")(qformer.astype(dtype)),
                                                 ensemble]
    marker = nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("embed",))
    start = self.param("start_img", marker, (llm.dim,), llm.param_dtype).astype(dtype)
    end = self.param("end_img", marker, (llm.dim,), llm.param_dtype).astype(dtype)
    n = ensemble.shape[0]
    wrap = lambda v: jnp.broadcast_to(v, (n, 1, llm.dim))  # noqa: E731
    return jnp.concatenate([wrap(start), *tokens, wrap(end)], axis=1)
