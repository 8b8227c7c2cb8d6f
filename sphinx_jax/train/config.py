"""Training configs: frozen dataclasses; experiment files in `configs/` return one `Experiment`.

Command-line overrides address fields by dotted path (`--config.train.steps=100`); values are
parsed as Python literals when they parse, else kept as strings. As in big_vision, a config file
may take an argument, `file.py:arg` calling `get_config("arg")` (a variant of the file's config).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with a linear warmup then cosine decay from `lr` to `min_lr` (the paper's recipe)."""

  lr: float = 2e-5
  min_lr: float = 0.0
  warmup_steps: int | None = None  # None: warmup_ratio of the run
  warmup_ratio: float = 0.03
  b1: float = 0.9
  b2: float = 0.95
  weight_decay: float = 0.1  # not on norms and biases
  clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model: str = "tiny_1k"  # a SPHINX preset; ignored when `init_from` is given
  init_from: str | None = None  # a params checkpoint (convert / export) to start from
  trainable: tuple[str, ...] = ("llm", "mixer")  # the towers stay frozen
  steps: int = 100
  micro_batches: int = 1  # gradient accumulation: the batch is split into this many steps
  loss_weighting: str = "token"  # 'token' (the reference) or 'sample' (train.loss)
  param_dtype: str = "float32"  # master weights
  compute_dtype: str = "float32"  # 'bfloat16' for bf16 compute
  remat_policy: str = "none"
  mesh: MeshConfig = MeshConfig()
  optim: OptimConfig = OptimConfig()
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  peak_flops: float | None = None  # per device, for MFU; None: measured at start


@dataclasses.dataclass(frozen=True)
class Experiment:
  workdir: str
  train: TrainConfig
  data: DataConfig


def load(path: str | Path, overrides: list[str] = ()) -> Any:
  """`get_config()` (or `get_config(arg)` for `file.py:arg`) of a config file, with
  `key.path=value` overrides applied: an Experiment, or a recipe.Recipe."""
  path, sep, arg = str(path).partition(":")
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: config file not found")
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: defines no get_config()")
  config = module.get_config(arg) if sep else module.get_config()
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"override {item!r} is not key.path=value")
    config = override(config, key.removeprefix("config.").split("."), _literal(value))
  return config


def override(config: Any, path: list[str], value: Any) -> Any:
  """A copy of dataclass `config` with the field at `path` set to `value`."""
  name = path[0]
  if not dataclasses.is_dataclass(config) or name not in {f.name for f in
                                                          dataclasses.fields(config)}:
    raise ValueError(f"no config field {name!r} in {type(config).__name__}")
  if len(path) > 1:
    value = override(getattr(config, name), path[1:], value)
  elif isinstance(getattr(config, name), tuple) and isinstance(value, list):
    value = tuple(value)
  return dataclasses.replace(config, **{name: value})


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
