"""LoRA adapters of the LLM: which leaves they are, and their merge into the weights.

The adapters live beside the weight they adapt (`wq_lora_a` [inputs, rank], `wq_lora_b`
[rank, outputs], stacked over layers like it; models.llama._project applies them). Merging
gives a plain params tree that any reader of a params checkpoint (chat, eval, mix) takes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models.llama import LORA_A, LORA_B
from sphinx_jax.models.quantization import QArray, weight

ADAPTER_SUFFIXES = (LORA_A, LORA_B)


def is_adapter(name: str) -> bool:
  return name.endswith(ADAPTER_SUFFIXES)


def merged(llm: dict, cfg: LlamaConfig) -> dict:
  """The LLM params with each adapted weight W replaced by W + (alpha / rank) A B (computed in
  float32) and the adapters dropped; a quantized base comes out dequantized, all of it in
  cfg.param_dtype (a plain float checkpoint: load it with `quantize` to serve it quantized)."""
  scale = cfg.lora_alpha / cfg.lora_rank

  def merge(module: dict) -> dict:
    out = {}
    for name, value in module.items():
      if isinstance(value, dict):
        out[name] = merge(value)
      elif f"{name}{LORA_A}" in module:
        a, b = module[f"{name}{LORA_A}"], module[f"{name}{LORA_B}"]
        delta = jax.vmap(lambda a, b: jnp.tensordot(a, b, axes=1))(
            a.astype(jnp.float32), b.astype(jnp.float32))
        out[name] = (weight(value, jnp.float32) + scale * delta).astype(cfg.param_dtype)
      elif not is_adapter(name):
        out[name] = weight(value, cfg.param_dtype) if isinstance(value, QArray) else value
    return out

  return jax.jit(merge)(llm)


def without_adapters(cfg: LlamaConfig) -> LlamaConfig:
  """The config of the merged model: LoRA fields back at their defaults."""
  defaults = {f.name: f.default for f in dataclasses.fields(LlamaConfig)
              if f.name.startswith("lora")}
  return cfg.replace(**defaults)
