"""Params-only checkpoints: `params/` (Orbax PyTree) + `config.json` (+ `tokenizer.model`).

This is the layout `launch convert` writes and inference, mixing and export read. On disk every
scanned stack (a subtree named `layers` whose leaves have a leading layer axis) is stored one
layer per subtree (`layers/0`, `layers/1`, ...): writers stream layer by layer through Orbax
partial saves (peak RAM about one layer), and readers restore each leaf straight into its
sharding and stack on device. A directory appears only when complete (written aside, renamed).
`checksums.json` holds every stored array's checksum (checkpoints.checksums), verified on load.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from orbax.checkpoint import v1 as ocp
from orbax.checkpoint.experimental.v1 import partial as ocp_partial

from sphinx_jax.checkpoints import checksums
from sphinx_jax.configs import LlamaConfig, SphinxConfig, from_checkpoint_config
from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import building

log = logging.getLogger(__name__)

PARAMS_DIR = "params"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
CHECKSUMS_FILE = "checksums.json"
STACK_KEY = "layers"


class CheckpointError(UserError):
  """A checkpoint directory is missing, incomplete or does not match the model."""


def write(dst: str | os.PathLike, parts: Iterable[dict], config: dict,
          tokenizer: str | os.PathLike | None = None) -> Path:
  """Write disk-layout `parts` (disjoint subtrees, saved one at a time) atomically to `dst`,
  with each array's checksum. With several processes every one calls this with the same global
  arrays: each writes its shards, process 0 the rest."""
  dst = Path(os.path.abspath(dst))  # Orbax wants absolute paths
  if dst.exists():
    raise CheckpointError(f"{dst}: already exists; refusing to overwrite")
  with building(dst) if jax.process_count() == 1 else _building_together(dst) as tmp:
    write_into(tmp, parts, config, tokenizer)
  return dst


@contextlib.contextmanager
def _building_together(dst: Path) -> Iterator[Path]:
  """`util.files.building` for all processes: process 0's hidden sibling, made and renamed by
  it once every process has written its shards."""
  tag = multihost_utils.broadcast_one_to_all(np.frombuffer(uuid.uuid4().bytes[:4], np.uint8))
  tmp = dst.parent / f".{dst.name}.partial-{bytes(np.asarray(tag)).hex()}"
  main = jax.process_index() == 0
  if main:
    tmp.mkdir(parents=True)
  multihost_utils.sync_global_devices(f"made {tmp}")
  try:
    yield tmp
    multihost_utils.sync_global_devices(f"wrote {tmp}")
    if main:
      tmp.rename(dst)
    multihost_utils.sync_global_devices(f"renamed {tmp}")
  finally:
    if main:
      shutil.rmtree(tmp, ignore_errors=True)


def write_into(directory: Path, parts: Iterable[dict], config: dict,
               tokenizer: str | os.PathLike | None = None) -> None:
  """The checkpoint's files in an existing (empty, absolute) `directory`: for writers that add
  files of their own before the directory is renamed into place."""
  sums: dict[str, str] = {}
  for part in parts:
    sums.update(checksums.of_tree(part))
    ocp_partial.save(directory / PARAMS_DIR, part)
  ocp_partial.finalize(directory / PARAMS_DIR)
  if jax.process_index() == 0:
    checksums.write(directory / CHECKSUMS_FILE, sums)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
      shutil.copyfile(tokenizer, directory / TOKENIZER_FILE)


def disk_parts(params: dict) -> Iterator[dict]:
  """Split in-memory params into disk-layout parts: everything unstacked, then layer by layer
  (on the host; a layer of arrays spread over several processes is gathered on device)."""
  rest, stacks = _split_stacks(params)
  if rest:
    yield rest
  for path, stack in stacks:
    n = jax.tree.leaves(stack)[0].shape[0]
    for i in range(n):
      yield _nest(path, {STACK_KEY: {str(i): jax.tree.map(lambda a: _layer(a, i), stack)}})


def _layer(stack, i: int):
  if isinstance(stack, jax.Array) and not stack.is_fully_addressable:
    replicated = NamedSharding(stack.sharding.mesh, PartitionSpec())
    return jax.jit(lambda a: a[i], out_shardings=replicated)(stack)
  return np.asarray(stack[i])


def assemble(parts: Iterable[dict]) -> dict:
  """In-memory params from disk-layout parts (the inverse of `disk_parts`), on the host."""
  merged: dict = {}
  for part in parts:
    _merge(merged, part)
  return _stack_host(merged)


def _merge(into: dict, part: dict) -> None:
  for key, value in part.items():
    if isinstance(value, dict):
      _merge(into.setdefault(key, {}), value)
    elif key in into:
      raise UserError(f"parameter {key!r} given twice")
    else:
      into[key] = value


def _stack_host(tree: dict) -> dict:
  out = {}
  for key, value in tree.items():
    if key == STACK_KEY and isinstance(value, dict):
      layers = [value[str(i)] for i in range(len(value))]
      out[key] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    elif isinstance(value, dict):
      out[key] = _stack_host(value)
    else:
      out[key] = value
  return out


def read_config(src: str | os.PathLike) -> dict:
  src = Path(src)
  if not src.is_dir():
    raise CheckpointError(f"{src}: checkpoint directory not found")
  path = src / CONFIG_FILE
  if not path.is_file():
    raise CheckpointError(f"{path}: missing; is {src} a directory written by `launch convert`?")
  try:
    config = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: invalid JSON ({e})") from None
  if not isinstance(config, dict):
    raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
  return config


def read_model_config(src: str | os.PathLike) -> SphinxConfig | LlamaConfig:
  """The model of a params checkpoint: a SphinxConfig, or a LlamaConfig for an LLM checkpoint."""
  try:
    return from_checkpoint_config(read_config(src))
  except (ValueError, TypeError, AttributeError, KeyError) as e:
    raise CheckpointError(f"{src}/{CONFIG_FILE}: not a model config ({e})") from None


def tokenizer_path(src: str | os.PathLike) -> Path | None:
  path = Path(src) / TOKENIZER_FILE
  return path if path.is_file() else None


def load(src: str | os.PathLike, abstract: dict) -> dict:
  """Restore params shaped like `abstract` (ShapeDtypeStructs with shardings, stacked layout).

  `abstract` may be a subtree of what is stored (e.g. only {'llm': ...}). Each array is restored
  in its stored dtype, its checksum verified, then cast to the abstract dtype. A missing key, a
  shape mismatch or a failed checksum is an error naming the key.
  """
  path = Path(src).absolute() / PARAMS_DIR  # Orbax wants absolute paths
  if not path.is_dir():
    raise CheckpointError(f"{path}: missing params directory")
  stored = _metadata(path)
  disk_abstract = _to_disk_abstract(abstract)
  _check_against(stored, disk_abstract, path)
  as_stored = jax.tree_util.tree_map_with_path(
      lambda p, a: jax.ShapeDtypeStruct(a.shape, stored[checksums.keystr(p)][1],
                                        sharding=a.sharding), disk_abstract)
  ctx = ocp.Context()
  ctx.pytree.loading.partial_load = True
  with ctx:
    restored = ocp.load_pytree(path, as_stored)
  verify(Path(src), restored)
  return _stack_like(restored, abstract)


def verify(src: Path, restored: dict) -> None:
  """Check restored disk-layout arrays (any subset) against `src`'s checksums.json."""
  recorded = checksums.read(src / CHECKSUMS_FILE)
  if recorded is None:
    log.warning("%s: no %s (written before checksums); not verified", src, CHECKSUMS_FILE)
    return
  checksums.verify(checksums.of_tree(restored), recorded, src)


def read_leaves(src: str | os.PathLike, leaves: dict) -> dict:
  """{key: writable host array} of stored leaves ({'a/b/c': (shape, dtype)}, disk layout)
  through one Orbax partial load, verified against the checkpoint's checksums: readers that
  stream a checkpoint a group of leaves at a time (mix, export).

  The abstract leaves are numpy arrays, so Orbax restores straight into host memory (a jax
  abstract would cost a device buffer and a copy per leaf); np.empty commits no pages.
  """
  abstract: dict = {}
  for key, (shape, dtype) in leaves.items():
    put_leaf(abstract, key, np.empty(shape, dtype))
  ctx = ocp.Context()
  ctx.pytree.loading.partial_load = True
  with ctx:
    restored = ocp.load_pytree(Path(src).absolute() / PARAMS_DIR, abstract)
  verify(Path(src), restored)
  return {key: functools.reduce(dict.__getitem__, key.split("/"), restored) for key in leaves}


def put_leaf(tree: dict, key: str, value) -> None:
  """tree['a']['b']['c'] = value for key 'a/b/c', making the parents."""
  *parents, name = key.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[name] = value


def stored_shapes(src: str | os.PathLike) -> dict:
  """{key path: (shape, dtype)} of what a checkpoint holds, in disk layout."""
  return _metadata(Path(src).absolute() / PARAMS_DIR)


def _metadata(path: Path) -> dict:
  tree = ocp.pytree_metadata(path).metadata
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {checksums.keystr(p): (tuple(m.shape), np.dtype(m.dtype)) for p, m in flat}


def _check_against(stored: dict, disk_abstract: dict, path: Path) -> None:
  for p, leaf in jax.tree_util.tree_flatten_with_path(disk_abstract)[0]:
    key = checksums.keystr(p)
    if key not in stored:
      raise CheckpointError(f"{path}: no parameter {key!r}")
    if stored[key][0] != tuple(leaf.shape):
      raise CheckpointError(f"{path}: parameter {key!r} has shape {stored[key][0]}, "
                            f"the model expects {tuple(leaf.shape)}")


def _split_stacks(tree: dict, path: tuple = ()) -> tuple[dict, list]:
  rest, stacks = {}, []
  for key, value in tree.items():
    if key == STACK_KEY and isinstance(value, dict):
      stacks.append((path, value))
    elif isinstance(value, dict):
      sub_rest, sub_stacks = _split_stacks(value, path + (key,))
      if sub_rest:
        rest[key] = sub_rest
      stacks += sub_stacks
    else:
      rest[key] = value
  return rest, stacks


def _nest(path: tuple, value: dict) -> dict:
  for key in reversed(path):
    value = {key: value}
  return value


def _layer_abstract(leaf: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
  sharding = leaf.sharding
  if isinstance(sharding, NamedSharding):
    sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec[1:]))
  return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype, sharding=sharding)


def _to_disk_abstract(tree: dict) -> dict:
  out = {}
  for key, value in tree.items():
    if key == STACK_KEY and isinstance(value, dict):
      n = jax.tree.leaves(value)[0].shape[0]
      out[key] = {str(i): jax.tree.map(_layer_abstract, value) for i in range(n)}
    elif isinstance(value, dict):
      out[key] = _to_disk_abstract(value)
    else:
      out[key] = value
  return out


def _stack_like(restored: dict, abstract: dict) -> dict:
  out = {}
  for key, value in abstract.items():
    if key == STACK_KEY and isinstance(value, dict):
      layers = [restored[key][str(i)] for i in range(len(restored[key]))]
      out[key] = jax.tree.map(lambda a, *xs: _stack(xs, a.sharding, a.dtype), value, *layers)
    elif isinstance(value, dict):
      out[key] = _stack_like(restored[key], value)
    else:
      out[key] = _stack((restored[key],), value.sharding, value.dtype, stack=False)
  return out


def _stack(arrays: tuple, sharding, dtype, stack: bool = True) -> jax.Array:
  """The arrays stacked (or the one array), cast to `dtype`, in `sharding`; inputs freed."""
  if not stack and arrays[0].dtype == dtype:
    return arrays[0]
  join = (lambda *xs: jax.numpy.stack(xs).astype(dtype)) if stack else (lambda x: x.astype(dtype))
  out = jax.jit(join, out_shardings=sharding)(*arrays)
  for a in arrays:
    a.delete()
  return out
