"""Per-array checksums of checkpoints, computed where the arrays live: on their accelerators,
or by numpy for arrays in host memory (numpy arrays, CPU devices).

Why our own: Orbax 0.12.8 writes zarr3 chunks whose only crc32c guards the shard index, not the
data, and exposes no codec option; 64 flipped bytes in a data file restore without complaint
(as NaNs). A host-side crc32c would need every array gathered to one host. This checksum is a
reduction instead: each element's bits, as uint32 words, pass through a bijective mix and are
summed with two odd position-dependent weights, modulo 2**32 (64 bits in all). Integer sums do not depend on the
order of reduction, so the value is the same for any sharding and any number of processes, and
it costs one read of the arrays on the accelerator. A change of any single word always changes
both sums (an odd weight is invertible mod 2**32); it is not a cryptographic hash, but a random
corruption of several words cancels in both sums only by a coincidence of about 2**-64.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sphinx_jax.util.errors import UserError

ALGORITHM = "sphinx-jax-mixsum64-v1"
_K1, _K2, _K3 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)


class ChecksumError(UserError):
  """An array's checksum differs from the one recorded when it was written."""


def _words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 (one word per element; 8-byte elements get a trailing pair)."""
  if x.dtype in (jnp.bool_, jnp.int4, jnp.uint4):  # sub-byte: each value as a word
    return x.astype(jnp.uint32)
  size = jnp.dtype(x.dtype).itemsize
  if size in (4, 8):
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _position(shape: tuple[int, ...]) -> jax.Array:
  """Each element's row-major index (mod 2**32), from per-axis iotas: no reshape, so a sharded
  array is never gathered."""
  index, stride = jnp.zeros((), jnp.uint32), 1
  for axis in reversed(range(len(shape))):
    iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    index = index + iota * np.uint32(stride % 2**32)
    stride *= shape[axis]
  return jnp.broadcast_to(index, shape)


def _sums(x: jax.Array) -> jax.Array:
  words = _words(x)
  words = (words ^ (words >> 16)) * _K2  # a bijection: no two words mix alike
  i = _position(words.shape)
  w1, w2 = i * _K1 | np.uint32(1), (i * _K3 + _K2) | np.uint32(1)
  return jnp.stack([jnp.sum(words * w1, dtype=jnp.uint32), jnp.sum(words * w2, dtype=jnp.uint32)])


def _host_sums(x: np.ndarray) -> tuple[int, int]:
  """`_sums` of an array in host memory, by numpy in chunks: no compilation (XLA:CPU compiles a
  reduction per array shape: 10 s for a tiny SPHINX's 75 arrays)."""
  if x.dtype in (np.bool_, jnp.int4, jnp.uint4):
    words = x.reshape(-1)
  else:
    size = x.dtype.itemsize
    words = np.ascontiguousarray(x).view({1: np.uint8, 2: np.uint16}.get(size, np.uint32))
    words = words.reshape(-1)
  hi = lo = 0
  for start in range(0, words.size, _HOST_CHUNK):
    w = words[start:start + _HOST_CHUNK].astype(np.uint32)
    w = (w ^ (w >> np.uint32(16))) * _K2
    i = np.arange(start, start + len(w), dtype=np.uint64).astype(np.uint32)
    w1, w2 = i * _K1 | np.uint32(1), (i * _K3 + _K2) | np.uint32(1)
    hi = (hi + int(np.sum(w * w1, dtype=np.uint32))) % 2**32
    lo = (lo + int(np.sum(w * w2, dtype=np.uint32))) % 2**32
  return hi, lo


_HOST_CHUNK = 1 << 22


def checksum(x, where: str = "auto") -> str:
  """The checksum of one array (any dtype, shape, sharding) as 16 hex digits."""
  return of_tree({"x": x}, where)["x"]


def of_tree(tree, where: str = "auto") -> dict[str, str]:
  """{key path ('a/b/0'): checksum} of every leaf of a pytree. `where` the sums are computed:
  'auto' sums numpy arrays and arrays on CPU devices of this process on the host (numpy, no
  compilation), the others on their devices (one program per device group: the arrays are
  never gathered); 'host' or 'device' forces one (the two agree bit for bit)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  out, groups = {}, {}
  for path, leaf in flat:
    key = keystr(path)
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    if np.size(leaf) == 0:
      out[key] = "0" * 16
    elif where == "host" or (where == "auto" and _on_host(leaf)):
      x = np.asarray(leaf)  # in the dtype a device would hold (64-bit ones as 32-bit)
      x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
      out[key] = "%08x%08x" % _host_sums(x)
    else:
      x = leaf if isinstance(leaf, jax.Array) else jax.device_put(np.asarray(leaf), _host())
      groups.setdefault(_placement(x), []).append((key, x))
  for (mesh, _), items in groups.items():
    sums = _compiled(mesh)([x for _, x in items])  # replicated: every process reads its own
    for (key, _), (hi, lo) in zip(items, np.asarray(sums.addressable_data(0)).tolist()):
      out[key] = f"{hi:08x}{lo:08x}"
  return {keystr(path): out[keystr(path)] for path, _ in flat}


def _on_host(leaf) -> bool:
  return not isinstance(leaf, jax.Array) or (
      leaf.is_fully_addressable and all(d.platform == "cpu" for d in leaf.sharding.device_set))


def _placement(x: jax.Array):
  """(mesh or None, devices): arrays summed by one program share these."""
  mesh = x.sharding.mesh if isinstance(x.sharding, NamedSharding) else None
  return mesh, tuple(sorted(d.id for d in x.sharding.device_set))


@functools.cache
def _compiled(mesh):
  def sums(arrays):
    return jnp.stack([_sums(x) for x in arrays])
  return jax.jit(sums, out_shardings=None if mesh is None else NamedSharding(mesh, P()))


@functools.cache
def _host():
  return jax.local_devices(backend="cpu")[0]


def keystr(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


def verify(actual: dict[str, str], recorded: dict[str, str], where) -> None:
  """Raise ChecksumError naming `where` and the first arrays whose checksum differs."""
  bad = [k for k, v in actual.items() if recorded.get(k) != v]
  if bad:
    missing = [k for k in bad if k not in recorded]
    what = "has no recorded checksum" if len(missing) == len(bad) else "fails its checksum"
    raise ChecksumError(f"{where}: array {bad[0]!r} {what} ({len(bad)} of {len(actual)} arrays "
                        f"differ{': ' + ', '.join(bad[1:4]) if len(bad) > 1 else ''}); "
                        "the checkpoint is corrupt")


def write(path: Path, sums: dict[str, str]) -> None:
  path.write_text(json.dumps({"algorithm": ALGORITHM, "arrays": sums}, indent=0) + "\n")


def read(path: Path) -> dict[str, str] | None:
  """The recorded checksums, or None for a checkpoint written before they existed."""
  if not path.is_file():
    return None
  try:
    data = json.loads(path.read_text())
    if data["algorithm"] != ALGORITHM:
      raise ChecksumError(f"{path}: unknown checksum algorithm {data['algorithm']!r}")
    return dict(data["arrays"])
  except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise ChecksumError(f"{path}: unreadable checksums ({type(e).__name__}: {e})") from None
