"""Weight mixing (the paper's Eq. 1): theta = beta * a + (1 - beta) * b over params checkpoints.

Leaf by leaf: leaves are read from both checkpoints through Orbax partial loads (grouped up to
GROUP_BYTES, a larger leaf alone), mixed in float32, cast back to their dtype and saved as one
part per group, so peak host memory is a few groups or leaves, not two models. Both checkpoints
are checked (tree, shapes, dtypes, config.json except `dtype`) before anything is written, and
the output appears only when complete. Betas outside [0, 1] extrapolate beyond a or b, so they
need `extrapolate=True`; a non-finite beta is always refused (it would write NaN everywhere).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.params_io import CheckpointError
from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import building

GROUP_BYTES = 64 << 20


def mix(a: str | os.PathLike, b: str | os.PathLike, betas: float | Sequence[float],
        out: str | os.PathLike, only: str | None = None, extrapolate: bool = False) -> Path:
  """Write mix(a, b, beta) to `out`, or with several betas each to `out/beta_<beta>`.

  `only` names a top-level subtree (e.g. 'llm') to mix; the rest is copied from `a`. A sweep is
  atomic as a whole: `out` appears once every beta is written. `extrapolate` allows betas
  outside [0, 1].
  """
  a, b, out = Path(a), Path(b), Path(out)
  sweep = not isinstance(betas, (int, float))
  betas = [float(x) for x in betas] if sweep else [float(betas)]
  for beta in betas:
    check_beta(beta, extrapolate)
  names = [f"beta_{x:g}" for x in betas]
  if len(set(names)) != len(names):
    raise UserError(f"betas {betas}: repeated")
  if out.exists():
    raise CheckpointError(f"{out}: already exists; refusing to overwrite")
  config, shapes = check_compatible(a, b)
  if only is not None and not any(k.split("/")[0] == only for k in shapes):
    raise CheckpointError(f"{a}: no top-level subtree {only!r} to mix")
  tokenizer = params_io.tokenizer_path(a)
  if not sweep:
    return params_io.write(out, _mixed_parts(a, b, shapes, betas[0], only), config, tokenizer)
  with building(out) as tmp:
    for beta, name in zip(betas, names):
      params_io.write(tmp / name, _mixed_parts(a, b, shapes, beta, only), config, tokenizer)
  return out


def check_beta(beta: float, extrapolate: bool) -> None:
  if not math.isfinite(beta):
    raise UserError(f"beta {beta}: not a finite number")
  if not (extrapolate or 0.0 <= beta <= 1.0):
    raise UserError(f"beta {beta:g} is outside [0, 1], which extrapolates beyond a or b; "
                     "pass --extrapolate (extrapolate=True) if that is meant")


def check_compatible(a: Path, b: Path) -> tuple[dict, dict]:
  """(a's config, {key: (shape, dtype)}) if a and b can be mixed, else an error naming the key."""
  config_a, config_b = params_io.read_config(a), params_io.read_config(b)
  key = _first_difference(_without_dtype(config_a), _without_dtype(config_b))
  if key is not None:
    raise CheckpointError(f"{a}, {b}: config.json differs at {key!r}")
  shapes_a, shapes_b = (_stored(p) for p in (a, b))
  only_a = sorted(shapes_a.keys() - shapes_b.keys())
  only_b = sorted(shapes_b.keys() - shapes_a.keys())
  if only_a or only_b:
    raise CheckpointError(f"{a}, {b}: parameter trees differ: only in a {only_a[:3]}, "
                          f"only in b {only_b[:3]}")
  for key, (shape, dtype) in shapes_a.items():
    if shapes_b[key] != (shape, dtype):
      raise CheckpointError(f"{a}, {b}: parameter {key!r} is {shape} {dtype} in a, "
                            f"{shapes_b[key][0]} {shapes_b[key][1]} in b")
  return config_a, shapes_a


def _mix_leaf(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
  """beta * a + (1 - beta) * b in float32, cast back. Overwrites a and b: no further copies."""
  dtype = a.dtype
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  a *= beta
  b *= 1 - beta
  a += b
  return a.astype(dtype, copy=False)


def _mixed_parts(a: Path, b: Path, shapes: dict, beta: float, only: str | None) -> Iterator[dict]:
  """One part per group of leaves: each group is read from a and b in one partial load each."""
  for group in _groups(shapes):
    xs = params_io.read_leaves(a, group)
    mixed = [k for k in group if only is None or k.split("/")[0] == only]
    ys = params_io.read_leaves(b, {k: group[k] for k in mixed}) if mixed else {}
    part: dict = {}
    for key in group:
      params_io.put_leaf(part, key, _mix_leaf(xs.pop(key), ys.pop(key), beta) if key in ys else xs.pop(key))
    yield part
    part.clear()  # the writer's loop still holds this dict while we read the next group


def _groups(shapes: dict) -> Iterator[dict]:
  """Consecutive leaves in groups of up to GROUP_BYTES (a larger leaf alone): few Orbax calls
  (each costs tens of ms to read, more to save) at a bounded peak memory."""
  group, size = {}, 0
  for key, (shape, dtype) in shapes.items():
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if group and size + nbytes > GROUP_BYTES:
      yield group
      group, size = {}, 0
    group[key] = (shape, dtype)
    size += nbytes
  if group:
    yield group


def _stored(src: Path) -> dict:
  if not (src / params_io.PARAMS_DIR).is_dir():
    raise CheckpointError(f"{src / params_io.PARAMS_DIR}: missing params directory")
  return params_io.stored_shapes(src)


def _without_dtype(tree):
  if isinstance(tree, dict):
    return {k: _without_dtype(v) for k, v in tree.items() if k != "dtype"}
  return tree


def _first_difference(x, y, path: str = "") -> str | None:
  if isinstance(x, dict) and isinstance(y, dict):
    for k in sorted(x.keys() | y.keys()):
      if k not in x or k not in y:
        return path + k
      found = _first_difference(x[k], y[k], path + k + "/")
      if found is not None:
        return found
    return None
  return None if x == y else path.rstrip("/")
