"""Vision-tower weights from PyTorch names: the machinery the tower converters share.

Every source (open_clip, timm, the dinov2 hub, HF transformers) is a table from canonical tensor
names to its own keys; one function per tower family turns canonical tensors into our params,
yielding disk-layout parts (one layer per part, stacked keys `layers/{i}`) like
`checkpoints.llama.llm_parts`, so a whole SPHINX checkpoint converts in about one layer of RAM.
Every key under a source's prefix must be mapped or known to be unused: anything else is an
error before a tensor is read.

The converters: `vision_vit` (CLIP, DINOv2, EVA ViT-g), `vision_convnext`, `vision_qformer`.
Each takes the checkpoint's `keys`, a getter `get(key) -> np.ndarray` (torch_io's state dicts,
or `dict.__getitem__`) and the prefix the tower sits under, infers the architecture from the
tensor shapes and returns (config, parts).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Iterable

import jax
import numpy as np

from sphinx_jax.checkpoints.params_io import STACK_KEY
from sphinx_jax.checkpoints.torch_io import ConversionError

Getter = Callable[[str], np.ndarray]
# Heads of the released towers by width (EVA ViT-g has 16 heads of 88); other widths: 64 per head.
PRESET_HEADS = {768: 12, 1024: 16, 1408: 16, 1536: 24}


def infer_heads(width: int, n_heads: int | None = None) -> int:
  heads = n_heads or PRESET_HEADS.get(width, max(width // 64, 1))
  if width % heads:
    raise ConversionError(f"width {width} is not a multiple of {heads} heads; pass n_heads")
  return heads


def _strip_ones(shape) -> tuple[int, ...]:
  shape = tuple(shape)
  while shape and shape[0] == 1:
    shape = shape[1:]
  return shape


def _regex(template: str, known: dict | None = None) -> str:
  """Template 'blocks.{i}.norm1' -> regex; placeholders not in `known` become (\\d+)."""
  pieces = re.split(r"\{(\w+)\}", template)
  known = known or {}
  return "".join(re.escape(p) if n % 2 == 0 else
                 (str(known[p]) if p in known else r"(\d+)") for n, p in enumerate(pieces))


def under(prefix: str, table: dict) -> dict:
  """`table` with `prefix` put in front of every template."""
  def put(value):
    if isinstance(value, list):
      return [put(v) for v in value]
    if isinstance(value, tuple):
      return tuple(prefix + v for v in value)
    return prefix + value
  return {name: put(value) for name, value in table.items()}


def _alternatives(value) -> list[tuple[str, ...]]:
  """A table value -> its alternatives, each a tuple of templates concatenated on dim 0."""
  options = value if isinstance(value, list) else [value]
  return [opt if isinstance(opt, tuple) else (opt,) for opt in options]


class Source:
  """The tensors of one tower under `prefix`, read by canonical name through `table`.

  table: canonical name -> source template, with `{i}`-style placeholders for layer indices. A
  tuple of templates is concatenated along dim 0 (separate q/k/v -> fused qkv); a list holds
  alternatives, the first one present wins (HF renamed keys across versions). A canonical
  'a.weight' that is not in the table resolves through entry 'a' plus '.weight'.
  ignore: regexes of keys that exist but are not part of the features (heads, text paths).
  origin: the file or directory the tensors come from, named in errors.
  """

  def __init__(self, keys: Iterable[str], get: Getter, prefix: str, table: dict,
               ignore: Iterable[str] = (), origin: str | None = None):
    self.names = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    self._origin = f"{origin}: " if origin else ""
    if not self.names:
      raise ConversionError(f"{self._origin}no tensors under prefix {prefix!r}")
    self.get, self.prefix, self.table = get, prefix, table
    patterns = [re.compile(_regex(t) + r"(\.weight|\.bias)?") for v in table.values()
                for opt in _alternatives(v) for t in opt]
    patterns += [re.compile(p) for p in ignore]
    unmapped = sorted(k for k in self.names if not any(p.fullmatch(k) for p in patterns))
    if unmapped:
      shown = ", ".join(repr(prefix + k) for k in unmapped[:8])
      more = f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else ""
      raise ConversionError(f"{self._origin}unmapped key(s) {shown}{more}: not a tensor of this "
                            "tower")

  def _options(self, name: str, idx: dict) -> list[list[str]]:
    if name in self.table:
      entry, suffix = self.table[name], ""
    else:
      module, _, param = name.rpartition(".")
      if module not in self.table:
        return []  # this source has no such tensor
      entry, suffix = self.table[module], "." + param
    return [[t.format(**idx) + suffix for t in opt] for opt in _alternatives(entry)]

  def keys_for(self, name: str, **idx) -> list[str] | None:
    """Source keys (without prefix) canonical `name` reads, or None if the source lacks it."""
    for option in self._options(name, idx):
      if all(k in self.names for k in option):
        return option
    return None

  def has(self, name: str, **idx) -> bool:
    return self.keys_for(name, **idx) is not None

  def __call__(self, name: str, shape: tuple[int, ...] | None = None, **idx) -> np.ndarray:
    """The tensor, checked against `shape` (leading size-1 dims, as in (1, 1, D), are dropped)."""
    keys = self.keys_for(name, **idx)
    if keys is None:
      wanted = " or ".join(repr(self.prefix + "+".join(o)) for o in self._options(name, idx))
      where = f" under prefix {self.prefix!r}" if self.prefix else ""
      raise ConversionError(f"{self._origin}missing key {wanted or repr(name)}{where}")
    arrays = [np.asarray(self.get(self.prefix + k)) for k in keys]
    array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    if shape is not None:
      if _strip_ones(array.shape) != _strip_ones(shape):
        names = " + ".join(repr(self.prefix + k) for k in keys)
        raise ConversionError(f"{self._origin}key {names} has shape {array.shape}, expected "
                              f"{shape}")
      array = array.reshape(shape)
    return array

  def count(self, template: str, **idx) -> int:
    """Number of indices of the one placeholder of `template` not in `idx` (max index + 1)."""
    pattern = re.compile(_regex(template.rstrip("."), idx) + r"(\..*)?")
    found = [int(m.group(1)) for k in self.names if (m := pattern.fullmatch(k))]
    return max(found) + 1 if found else 0

  def shape(self, name: str, **idx) -> tuple[int, ...]:
    return self(name, **idx).shape


def linear(src: Source, name: str, out_features: int, in_features: int, **idx) -> dict:
  """torch Linear [out, in] (+ bias) -> nn.Dense {kernel [in, out], bias}."""
  return {"kernel": src(f"{name}.weight", (out_features, in_features), **idx).T,
          "bias": src(f"{name}.bias", (out_features,), **idx)}


def norm(src: Source, name: str, width: int, **idx) -> dict:
  return {"scale": src(f"{name}.weight", (width,), **idx),
          "bias": src(f"{name}.bias", (width,), **idx)}


def attention(q: dict, k: dict, v: dict, o: dict, n_heads: int) -> dict:
  """Dense-style {kernel [in, out], bias} projections -> `vit.Attention` params."""
  def heads(p):
    return (p["kernel"].reshape(p["kernel"].shape[0], n_heads, -1),
            p["bias"].reshape(n_heads, -1))

  (wq, bq), (wk, bk), (wv, bv) = heads(q), heads(k), heads(v)
  return {"wq": wq, "bq": bq, "wk": wk, "bk": bk, "wv": wv, "bv": bv,
          "wo": o["kernel"].reshape(n_heads, -1, o["kernel"].shape[1]), "bo": o["bias"]}


def emit(root: str | tuple[str, ...], tree: dict, dtype=None, layer: int | None = None) -> dict:
  """A disk-layout part: `tree` (or layer `layer` of the stack) under `root`, cast to `dtype`
  and made contiguous."""
  tree = jax.tree.map(lambda a: np.ascontiguousarray(a if dtype is None else a.astype(dtype)),
                      tree)
  if layer is not None:
    tree = {STACK_KEY: {str(layer): tree}}
  for key in reversed(root_path(root)):
    tree = {key: tree}
  return tree


def root_path(root: str | tuple[str, ...]) -> tuple[str, ...]:
  return (root,) if isinstance(root, str) else tuple(root)


def square_grid(n: int, what: str) -> int:
  side = math.isqrt(n)
  if side * side != n:
    raise ConversionError(f"{what}: {n} positions are not a square grid")
  return side

