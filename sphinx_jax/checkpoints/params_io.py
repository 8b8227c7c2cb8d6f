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
from sphinx_jax.models import quantization
from sphinx_jax.models.quantization import QArray
from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import building

log = logging.getLogger(__name__)

PARAMS_DIR = "params"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"
CHECKSUMS_FILE = "checksums.json"
STACK_KEY = "layers"
LLM_KEY = "llm"
QUANTIZATION_KEY = "quantization"  # config.json: the scheme of a quantized checkpoint's LLM


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
    part = jax.tree.map(_storable, part)
    sums.update(checksums.of_tree(part))
    with saving_context():
      ocp_partial.save(directory / PARAMS_DIR, part)
  ocp_partial.finalize(directory / PARAMS_DIR)
  if jax.process_index() == 0:
    checksums.write(directory / CHECKSUMS_FILE, sums)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
      shutil.copyfile(tokenizer, directory / TOKENIZER_FILE)


def replica_parallel_saving() -> bool:
  """Whether Orbax saves replicated arrays split across replicas (its default off GPU). It
  slices each array per replica; on XLA:CPU every slice shape is a compilation (312, 17 s, in a
  tiny SPHINX's first checkpoint) and all replicas are on this host: off there."""
  return jax.default_backend() != "cpu"


def saving_context() -> ocp.Context:
  """Orbax's saving options (`replica_parallel_saving`)."""
  ctx = ocp.Context()
  ctx.array.saving.use_replica_parallel = replica_parallel_saving()
  return ctx


def _storable(x):
  """uint4 (nf4 codes) has no TensorStore dtype: stored as uint8, cast back on load."""
  return x.astype(np.uint8) if x.dtype == jax.numpy.uint4 else x


def disk_parts(params: dict) -> Iterator[dict]:
  """Split in-memory params into disk-layout parts: everything unstacked, then layer by layer
  (on the host; a layer of arrays spread over several processes is gathered on device)."""
  rest, stacks = _split_stacks(_plain(params))
  if rest:
    yield rest
  for path, stack in stacks:
    n = jax.tree.leaves(stack)[0].shape[0]
    for i in range(n):
      yield _nest(path, {STACK_KEY: {str(i): _layer(stack, i)}})


def _layer(stack: dict, i: int) -> dict:
  """Layer `i` of every array of a stack, as numpy. On devices, one program takes it with the
  index as an argument: a compilation per stack, not per array and layer."""
  arrays = [a for a in jax.tree.leaves(stack) if isinstance(a, jax.Array)]
  if not arrays:
    return jax.tree.map(lambda a: np.asarray(a[i]), stack)
  spread = not all(a.is_fully_addressable for a in arrays)
  return jax.tree.map(np.asarray, _take(arrays[0].sharding.mesh if spread else None)(
      stack, np.int32(i)))


@functools.cache
def _take(mesh):
  """jit (stack, i) -> layer i; replicated over `mesh` (arrays spread over processes)."""
  def take(stack, i):
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), stack)
  return jax.jit(take, out_shardings=None if mesh is None else NamedSharding(mesh,
                                                                             PartitionSpec()))


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


def load(src: str | os.PathLike, abstract: dict, quantize: str | None = None) -> dict:
  """Restore params shaped like `abstract` (ShapeDtypeStructs with shardings, stacked layout).

  `abstract` may be a subtree of what is stored (e.g. only {'llm': ...}). Each array is restored
  in its stored dtype, its checksum verified, then cast to the abstract dtype. A missing key, a
  shape mismatch or a failed checksum is an error naming the key.

  The LLM's matmul weights (under 'llm') come back quantized (models.quantization) when the
  checkpoint holds them so (`launch convert --quantize`) or when `quantize` names a scheme: a
  float checkpoint is then read one layer at a time, each layer quantized as it arrives, so the
  float weights never exist all at once. `quantize` other than the stored scheme is an error.
  """
  src = Path(src)
  path = src.absolute() / PARAMS_DIR  # Orbax wants absolute paths
  if not path.is_dir():
    raise CheckpointError(f"{path}: missing params directory")
  stored_scheme = read_config(src).get(QUANTIZATION_KEY)
  if stored_scheme is not None and stored_scheme not in quantization.SCHEMES:
    raise CheckpointError(f"{src}/{CONFIG_FILE}: quantization {stored_scheme!r} is not one of "
                          f"{quantization.SCHEMES}")
  quantization.check_scheme(quantize)
  if stored_scheme is not None and quantize not in (None, stored_scheme):
    raise CheckpointError(f"{src}: holds {stored_scheme} weights, not {quantize}; load it with "
                          f"quantize={stored_scheme!r} (or none), or quantize a float checkpoint")
  scheme = stored_scheme or quantize
  if scheme is not None and LLM_KEY in abstract:
    abstract = {**abstract, LLM_KEY: quantization.abstract_llm(abstract[LLM_KEY], scheme)}
  plain = _plain(abstract)
  disk_abstract = _to_disk_abstract(plain)
  stored = _metadata(path)
  if stored_scheme is None and scheme is not None:  # float on disk: quantize layer by layer
    float_disk = _to_disk_abstract(_plain(quantization.float_abstract(abstract)))
    _check_against(stored, float_disk, path)
    restored = {}
    for group in _layer_groups(float_disk):
      _merge(restored, _quantized_group(_restore(src, stored, group), disk_abstract, scheme))
  else:
    _check_against(stored, disk_abstract, path)
    restored = _restore(src, stored, disk_abstract)
  return _quantized(_stack_like(restored, plain), abstract)


def _restore(src: Path, stored: dict, disk_abstract: dict) -> dict:
  """One Orbax partial load of `disk_abstract`'s arrays in their stored dtypes, verified."""
  as_stored = jax.tree_util.tree_map_with_path(
      lambda p, a: jax.ShapeDtypeStruct(a.shape, stored[checksums.keystr(p)][1],
                                        sharding=a.sharding), disk_abstract)
  return _orbax_load(src, as_stored)


def _orbax_load(src: Path, abstract: dict) -> dict:
  """Orbax's partial load of `abstract` from `src`, verified; what the storage layer cannot
  read (a truncated or damaged file) is one line naming the checkpoint."""
  ctx = ocp.Context()
  ctx.pytree.loading.partial_load = True
  try:
    with ctx:
      restored = ocp.load_pytree(Path(src).absolute() / PARAMS_DIR, abstract)
  except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise bare Exceptions on bad files
    reason = str(e.__cause__ or e).strip().splitlines()[0][:300]
    raise CheckpointError(f"{src}: unreadable params (truncated or damaged file?): "
                          f"{reason}") from None
  verify(Path(src), restored)
  return restored


def _layer_groups(disk_abstract: dict) -> Iterator[dict]:
  """The unstacked arrays, then each layer index of every stack: the units of a streamed load."""
  rest, stacks = _split_stacks(disk_abstract)
  if rest:
    yield rest
  for i in range(max((len(stack) for _, stack in stacks), default=0)):
    group: dict = {}
    for path, stack in stacks:
      if str(i) in stack:
        _merge(group, _nest(path, {STACK_KEY: {str(i): stack[str(i)]}}))
    yield group


def _quantized_group(restored: dict, disk_abstract: dict, scheme: str) -> dict:
  """Restored float arrays with the LLM's matmul weights quantized into the (plain) layout and
  shardings of `disk_abstract`; each float array is freed as soon as it is quantized."""
  def one(path, x):
    found = _llm_target(path)
    if not found:
      return x
    want = functools.reduce(dict.__getitem__, _keys(path), disk_abstract)
    out = _quantizer(*found, scheme, want["qvalue"].sharding, want["scale"].sharding)(x)
    x.delete()
    return out
  return jax.tree_util.tree_map_with_path(one, restored)


@functools.cache
def _quantizer(contraction: tuple[int, ...], stacked: bool, scheme: str, value_sharding,
               scale_sharding):
  """One compiled quantization per kind of weight (not one per array)."""
  return jax.jit(lambda w: _plain(quantization.quantize(w, contraction, scheme, stacked)),
                 out_shardings={"qvalue": value_sharding, "scale": scale_sharding})


def _keys(path) -> tuple[str, ...]:
  return tuple(checksums.keystr((k,)) for k in path)


def _llm_target(path):
  """models.quantization.target of a params path, for the LLM's weights only."""
  keys = _keys(path)
  return keys[0] == LLM_KEY and quantization.target(keys[1:])


def _plain(tree):
  """QArrays as {'qvalue', 'scale'} dicts: how they are stored (the qvalue's dtype is the
  scheme's)."""
  return jax.tree.map(lambda x: {"qvalue": x.qvalue, "scale": x.scale}
                      if isinstance(x, QArray) else x, tree,
                      is_leaf=lambda x: isinstance(x, QArray))


def _quantized(plain: dict, abstract: dict) -> dict:
  """The inverse of `_plain`, by the QArrays of `abstract`."""
  if isinstance(abstract, QArray):
    return QArray(plain["qvalue"], plain["scale"], qtype=abstract.qtype)
  if isinstance(abstract, dict):
    return {k: _quantized(plain[k], v) for k, v in abstract.items()}
  return plain


def quantized_parts(parts: Iterable[dict], scheme: str | None) -> Iterator[dict]:
  """Disk-layout parts (host arrays) with the LLM's matmul weights quantized by `scheme` (None:
  unchanged): what `launch convert --quantize` writes."""
  quantization.check_scheme(scheme)
  for part in parts:
    if scheme is None:
      yield part
      continue

    def one(path, x):
      found = _llm_target(path)
      if not found:
        return x
      q = quantization.quantize(jax.device_put(x, _host_device()), found[0], scheme, found[1])
      return {"qvalue": np.asarray(q.qvalue), "scale": np.asarray(q.scale)}
    yield jax.tree_util.tree_map_with_path(one, part)


@functools.cache
def _host_device():
  return jax.local_devices(backend="cpu")[0]


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
  restored = _orbax_load(Path(src), abstract)
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
  out = _joiner(dtype, sharding, stack)(*arrays)
  for a in arrays:
    a.delete()
  return out


@functools.cache
def _joiner(dtype, sharding, stack: bool):
  """The jitted stack-and-cast, one per (dtype, sharding): loading another checkpoint of the
  same shapes (every load of a model, the recipe's five) compiles nothing again."""
  join = (lambda *xs: jax.numpy.stack(xs).astype(dtype)) if stack else (lambda x: x.astype(dtype))
  return jax.jit(join, out_shardings=sharding)
