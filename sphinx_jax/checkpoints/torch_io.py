"""Reading PyTorch checkpoints tensor by tensor: mmap'd `.pth` shards and safetensors files.

torch is imported lazily: only conversion needs it.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import ml_dtypes
import numpy as np

from sphinx_jax.util.errors import UserError


log = logging.getLogger(__name__)


class ConversionError(UserError):
  """A source checkpoint is unreadable or disagrees with its config; names the file and key."""


def read_json(path: Path) -> dict:
  """A source's JSON object (config.json, meta.json, params.json, an index); anything else is
  an error naming the file."""
  try:
    value = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConversionError(f"{path}: cannot read ({e})") from None
  if not isinstance(value, dict):
    raise ConversionError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def _torch():
  try:
    import torch
  except ImportError:
    raise ConversionError("converting PyTorch checkpoints needs torch: "
                          "pip install -r requirements-test.txt") from None
  return torch


def to_numpy(tensor) -> np.ndarray:
  """torch tensor -> numpy array of the same dtype (bfloat16 through ml_dtypes)."""
  torch = _torch()
  tensor = tensor.detach().cpu().contiguous()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def load_pth(path: Path, unwrap: str | None = None) -> dict:
  """mmap a `.pth` state dict (nothing is read until a tensor is touched)."""
  torch = _torch()
  try:
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
  except Exception as e:  # torch raises RuntimeError, pickle errors, EOFError, ...
    raise ConversionError(f"{path}: cannot read PyTorch checkpoint ({type(e).__name__}: {e})") \
        from None
  if unwrap is not None:
    if not isinstance(state, dict) or unwrap not in state:
      raise ConversionError(f"{path}: expected a dict with key {unwrap!r}")
    state = state[unwrap]
  return state


class ShardedStateDict:
  """Model-parallel `.pth` shards read as one state dict, tensor by tensor.

  `split_dim(key)` gives the dimension a key is split along across shards, or None for weights
  replicated on every shard (read from shard 0).
  """

  def __init__(self, files: Sequence[Path], split_dim: Callable[[str], int | None],
               unwrap: str | None = None, config_source: str = "the config",
               check_replicas: bool = False):
    if not files:
      raise ConversionError("no checkpoint shards given")
    self.files = list(files)
    self.shards = [load_pth(f, unwrap) for f in self.files]
    self.split_dim = split_dim
    self.config_source = config_source
    self.check_replicas = check_replicas

  def keys(self) -> list[str]:
    return list(self.shards[0].keys())

  def shard0_info(self, key: str) -> tuple[tuple[int, ...], str]:
    """Shape and dtype name of a key on shard 0, without reading its data."""
    if key not in self.shards[0]:
      raise ConversionError(f"{self.files[0]}: missing key {key!r}")
    tensor = self.shards[0][key]
    return tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")

  def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    for f, shard in zip(self.files, self.shards):
      if key not in shard:
        raise ConversionError(f"{f}: missing key {key!r}")
    dim = self.split_dim(key)
    if dim is None or len(self.shards) == 1:
      array = to_numpy(self.shards[0][key])
      if self.check_replicas and dim is None:
        self._warn_if_replicas_differ(key)
    else:
      array = np.concatenate([to_numpy(s[key]) for s in self.shards], axis=dim)
    if shape is not None and tuple(array.shape) != tuple(shape):
      names = ", ".join(f.name for f in self.files)
      raise ConversionError(f"{self.files[0].parent}: key {key!r} has shape {tuple(array.shape)} "
                            f"in {names}, but {self.config_source} implies {tuple(shape)}")
    return array


  def _warn_if_replicas_differ(self, key: str) -> None:
    torch = _torch()
    first = self.shards[0][key]
    for f, shard in zip(self.files[1:], self.shards[1:]):
      if not torch.equal(first, shard[key]):
        log.warning("%s: replicated key %r differs from %s; using %s", f, key,
                    self.files[0].name, self.files[0].name)


class SafetensorsStateDict:
  """HF safetensors checkpoint (single file or index + shards), tensor by tensor."""

  def __init__(self, src: Path):
    from safetensors import safe_open
    index = src / "model.safetensors.index.json"
    if index.is_file():
      weight_map = read_json(index).get("weight_map")
      if not isinstance(weight_map, dict):
        raise ConversionError(f"{index}: no 'weight_map' object")
      files = sorted(set(weight_map.values()))
    elif (src / "model.safetensors").is_file():
      files = ["model.safetensors"]
    else:
      raise ConversionError(f"{src}: no model.safetensors or model.safetensors.index.json")
    _torch()
    self.files = ([index] if index.is_file() else []) + [src / name for name in files]
    self.handles, self.where = {}, {}
    for name in files:
      try:
        handle = safe_open(str(src / name), framework="pt")
      except Exception as e:
        raise ConversionError(f"{src / name}: cannot read safetensors ({e})") from None
      self.handles[name] = handle
      for key in handle.keys():
        self.where[key] = name
    self.src = src

  def keys(self) -> list[str]:
    return list(self.where)

  def dtype_name(self, key: str) -> str:
    if key not in self.where:
      raise ConversionError(f"{self.src}: missing key {key!r}")
    names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
    return names[self.handles[self.where[key]].get_slice(key).get_dtype()]

  def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in self.where:
      raise ConversionError(f"{self.src}: missing key {key!r}")
    array = to_numpy(self.handles[self.where[key]].get_tensor(key))
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise ConversionError(f"{self.src / self.where[key]}: key {key!r} has shape "
                            f"{tuple(array.shape)}, but config.json implies {tuple(shape)}")
    return array


def shard_files(src: Path, pattern: str) -> list[Path]:
  """Files in `src` whose name matches `pattern` (a regex with one group: the shard number)."""
  found = sorted((int(m.group(1)), p) for p in src.iterdir()
                 if (m := re.fullmatch(pattern, p.name)))
  return [p for _, p in found]
