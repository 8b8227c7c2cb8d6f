"""What fits on one GPU: bytes by shape evaluation of the real presets (nothing allocated).

Inference: the LLM's parameters (bf16, or its matmul weights int8 / int4 with their scales:
models.quantization), the towers and the mixer (bf16 always), and the KV cache. LoRA
fine-tuning: the frozen model as above, plus the adapters (fp32 master weights), their gradients
and AdamW's two moments; the activations of a step come from the compiler (`launch compile`),
not from here. A card "fits" a total up to `USABLE` of its memory (the rest goes to the CUDA
context, the compiler's workspace and fragmentation).
"""
from __future__ import annotations

import flax.linen as nn
import jax
from flax import traverse_util
import jax.numpy as jnp

from sphinx_jax.configs import LlamaConfig, SphinxConfig
from sphinx_jax.models import quantization, sphinx
from sphinx_jax.models.lora import is_adapter

GPU_GIB = (16, 24, 40, 48, 80)
USABLE = 0.9


def abstract_params(cfg: SphinxConfig, dtype: str = "bfloat16",
                    quantize: str | None = None) -> dict:
  """ShapeDtypeStructs of a SPHINX preset stored in `dtype`, the LLM's matmul weights quantized
  by `quantize`."""
  cfg = cfg.with_tower_dtypes(dtype, dtype)
  cfg = cfg.replace(llm=cfg.llm.replace(param_dtype=dtype, dtype=dtype))
  params = jax.eval_shape(lambda k: nn.unbox(sphinx.init_params(cfg, k)), jax.random.key(0))
  params = params["params"]
  if quantize is not None:
    params = {**params, "llm": quantization.abstract_llm(params["llm"], quantize)}
  return params


def kv_cache_bytes(llm: LlamaConfig, tokens: int, batch: int = 1, dtype: str = "bfloat16") -> int:
  return 2 * llm.n_layers * batch * tokens * llm.kv_heads * llm.head_dim * \
      jnp.dtype(dtype).itemsize


def inference(cfg: SphinxConfig, quantize: str | None = None, tokens: int = 4096,
              batch: int = 1) -> dict[str, int]:
  """Bytes of serving `cfg` in bf16 (its LLM quantized by `quantize`) with a KV cache of
  `tokens` positions for `batch` rows."""
  params = abstract_params(cfg, "bfloat16", quantize)
  llm = quantization.nbytes(params["llm"])
  rest = quantization.nbytes({k: v for k, v in params.items() if k != "llm"})
  kv = kv_cache_bytes(cfg.llm, tokens, batch)
  return {"llm": llm, "towers_and_mixer": rest, "kv_cache": kv, "total": llm + rest + kv}


def lora_finetune(cfg: SphinxConfig, rank: int, targets: tuple[str, ...],
                  quantize: str | None = None) -> dict[str, int]:
  """Bytes of LoRA fine-tuning `cfg` before activations: the frozen model (bf16, its LLM
  quantized by `quantize`), fp32 adapters of `rank` on `targets`, their gradients and AdamW's
  two moments (optimizer state for the adapters only)."""
  frozen = abstract_params(cfg, "bfloat16", quantize)
  adapted = cfg.replace(llm=cfg.llm.replace(lora_rank=rank, lora_targets=targets))
  with_adapters = abstract_params(adapted, "float32")["llm"]
  adapters = sum(quantization.nbytes(v) for path, v in
                 traverse_util.flatten_dict(with_adapters).items() if is_adapter(path[-1]))
  base = quantization.nbytes(frozen)
  return {"frozen_model": base, "adapters": adapters, "adapter_grads": adapters,
          "adam_moments": 2 * adapters, "total": base + 4 * adapters}


def fits(total: int) -> list[int]:
  """The GPU sizes (GiB) that hold `total` bytes within USABLE of their memory."""
  return [g for g in GPU_GIB if total <= USABLE * g * 2 ** 30]

