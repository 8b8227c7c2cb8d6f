"""Architecture configs: frozen dataclasses plus named presets.

Variants are configs, not copied files: every model size is a preset of one dataclass, and
`config.json` in a checkpoint directory is `dataclasses.asdict` of it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """LLaMA-2 / TinyLlama decoder, with Meta's field names (`params.json`)."""

  vocab_size: int = 32000
  dim: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads == n_heads)
  multiple_of: int = 256  # Meta's FFN rounding
  ffn_dim_multiplier: float | None = None
  ffn_dim: int | None = None  # explicit FFN width (HF `intermediate_size`); None: Meta's rule
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: float = 1.0  # linear position scaling: positions are divided by this
  max_seq_len: int = 4096
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype; logits are always returned in float32
  remat_policy: str = "none"  # one of REMAT_POLICIES
  attention: str = "xla"  # one of ATTENTION_IMPLS: jax.nn.dot_product_attention implementation

  def __post_init__(self):
    if self.dim % self.n_heads:
      raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
    if self.n_heads % self.kv_heads:
      raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy {self.remat_policy!r} is not one of {REMAT_POLICIES}")
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(f"attention {self.attention!r} is not one of {ATTENTION_IMPLS}")

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  @property
  def head_dim(self) -> int:
    return self.dim // self.n_heads

  @property
  def hidden_dim(self) -> int:
    """FFN width: explicit, or Meta's rule (2/3 of 4*dim, times the multiplier, rounded up)."""
    if self.ffn_dim is not None:
      return self.ffn_dim
    hidden = int(2 * 4 * self.dim / 3)
    if self.ffn_dim_multiplier is not None:
      hidden = int(self.ffn_dim_multiplier * hidden)
    return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

  def replace(self, **changes: Any) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown LlamaConfig fields: {unknown}")
    return cls(**d)


LLM_PRESETS: dict[str, LlamaConfig] = {
    "llama2_7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32),
    "llama2_13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40),
    "llama2_70b": LlamaConfig(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3, multiple_of=4096),
    "tinyllama_1b": LlamaConfig(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, max_seq_len=2048),
    # Laptop-sized model for the embedded default and tests.
    "tiny": LlamaConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32,
                        max_seq_len=512),
}


def llm_preset(name: str, **overrides: Any) -> LlamaConfig:
  if name not in LLM_PRESETS:
    raise KeyError(f"unknown LLM preset {name!r}; known: {sorted(LLM_PRESETS)}")
  return LLM_PRESETS[name].replace(**overrides)
