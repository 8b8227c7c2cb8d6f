"""FLOPs of a train step (for MFU) and the machine's measured peak.

Counted analytically, as MaxText does: the LLM's matmuls 6 x params x tokens (forward and
backward) plus causal-free attention 12 x layers x dim x T^2 per row; each frozen tower's forward
2 x params x its tokens (views x patches; ConvNeXt: the pixels of its last-stage map). XLA's
cost analysis counts a scanned layer once, so it cannot be used here.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from sphinx_jax.configs import LlamaConfig, SphinxConfig


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def step_flops(cfg: SphinxConfig | LlamaConfig, params: dict, batch: dict,
               backward: bool = True) -> float:
  """Global FLOPs of one training step on `batch` (arrays or shapes) for abstract `params`;
  with `backward=False`, of the forward pass alone (a prefill). A LlamaConfig: the LLM alone."""
  llm = cfg if isinstance(cfg, LlamaConfig) else cfg.llm
  rows, length = batch["tokens"].shape
  matmul_params = _count(params["llm"]) - llm.vocab_size * llm.dim  # the lookup is no matmul
  passes = 3 if backward else 1  # the backward pass costs twice the forward
  flops = passes * (2 * matmul_params * rows * length
                    + 4 * llm.n_layers * llm.dim * length ** 2 * rows)
  if llm is cfg:
    return flops
  views = math.prod(batch["images"]["vit"].shape[:3])  # rows x image slots x views
  for name, tower in (("clip", cfg.clip), ("dinov2", cfg.dinov2)):
    if tower is not None:
      flops += 2 * _count(params[name]) * tower.n_tokens * views
  if cfg.blip2 is not None:
    flops += 2 * _count(params["qformer"]) * cfg.blip2.vision.n_tokens * views
  cells = (cfg.convnext_size // cfg.convnext.stride) ** 2
  return flops + 2 * _count(params["convnext"]) * cells * views


def measured_peak_flops(n: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of one device on a large matmul in the LLM's usual dtype for that platform."""
  device = jax.devices()[0]
  dtype = jnp.float32 if device.platform == "cpu" else jnp.bfloat16
  a = jax.device_put(jnp.ones((n, n), dtype), device)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best
