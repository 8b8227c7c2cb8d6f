"""What every network here is built from: logically partitioned initialisers, torch-exact
LayerNorm, Dense, and a scanned (optionally rematerialised) stack of blocks. Layers are one
`nn.scan`, so compile time does not grow with depth; `configs.REMAT_POLICIES` is the one table
of what a scanned block keeps for the backward pass."""
from __future__ import annotations

import flax.linen as nn

from sphinx_jax.configs import REMAT_POLICIES


def kernel_init(axes: tuple[str | None, ...], stddev: float = 0.02):
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def fan_in_init(axes: tuple[str | None, ...], in_axis: int | tuple[int, ...] = 0):
  """Normal with std 1/sqrt(fan in) (the sum over `in_axis`): unit-variance outputs at any
  width. LLaMA's fixed 0.02 is that rule at 2,500 wide (0.0156 at 7B's 4,096); at the mini
  LLM's 128 it is 4.4x too small, and a fresh mini LLM then takes thousands of steps to start
  reading its context (docs/architecture.md, the embedded default)."""
  ins = (in_axis,) if isinstance(in_axis, int) else in_axis
  out_axis = tuple(i for i in range(len(axes)) if i not in ins)
  return nn.with_logical_partitioning(
      nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=in_axis,
                                       out_axis=out_axis), axes)


def zeros_init(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def layer_norm(cfg, eps: float, name: str) -> nn.LayerNorm:
  """LayerNorm over the last axis with torch's two-pass variance (activations of the giant
  towers are large, where E[x^2] - E[x]^2 loses digits)."""
  return nn.LayerNorm(
      epsilon=eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, use_fast_variance=False,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=zeros_init(("embed",)), name=name)


def dense(cfg, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
  return nn.Dense(features, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  kernel_init=kernel_init(axes), bias_init=zeros_init(axes[1:]), name=name)


def scanned(block: type[nn.Module], cfg, length: int, in_axes=(), axis: str = "layers"):
  """`block` scanned `length` times, params stacked on a leading `axis` (a logical name; a scan
  inside a scan needs its own), rematerialised by `cfg.remat_policy`."""
  policy = REMAT_POLICIES[cfg.remat_policy]
  if policy is not None:
    block = nn.remat(block, policy=policy, prevent_cse=False)
  return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=in_axes, length=length, metadata_params={nn.PARTITION_NAME: axis})
