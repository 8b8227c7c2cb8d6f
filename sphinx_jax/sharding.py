"""Device mesh, the one logical-axis rules table, and initialisation straight into shardings.

Every parameter and key activation carries logical axis names; `LOGICAL_RULES` is the only
place that maps them to the mesh axes ('data', 'fsdp', 'tensor').
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sphinx_jax.util.errors import UserError
from sphinx_jax.util.once import run_once

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axes. Parameters are sharded FSDP-style on their 'embed' dim and
# Megatron-style on heads / mlp / vocab; activations shard their batch over data and fsdp.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("sublayers", None),  # a scan inside the scanned layers (SAM's windowed blocks)
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
    # vision towers (rows may be added here: one table for the whole project)
    ("conv_spatial", None),
    ("conv_in", None),
    ("queries", None),
    ("positions", None),  # learned position-embedding rows (ViT)
    ("conv_spatial_w", None),  # a conv kernel's width (flax forbids a name twice per array)
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape; one axis may be -1 to take the devices the others leave."""

  data: int = 1
  fsdp: int = -1
  tensor: int = 1

  def resolve(self, n_devices: int) -> tuple[int, int, int]:
    shape = [self.data, self.fsdp, self.tensor]
    if shape.count(-1) > 1:
      raise UserError(f"mesh {tuple(shape)}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
      raise UserError(f"mesh {tuple(shape)}: sizes must be positive or -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
      if n_devices % known:
        raise UserError(f"mesh {tuple(shape)} does not fit {n_devices} devices: "
                         f"{n_devices} is not a multiple of {known}")
      shape[shape.index(-1)] = n_devices // known
    if math.prod(shape) != n_devices:
      raise UserError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                       f"but {n_devices} are available")
    return tuple(shape)


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = config.resolve(len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_sharding(logical_specs: Any, mesh: Mesh) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_RULES)


def check_divisible(abstract: Any, shardings: Any) -> None:
  """Raise naming the first leaf whose dimension does not divide its mesh axes."""
  flat_abs = jax.tree_util.tree_flatten_with_path(abstract)[0]
  flat_shard = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), sharding in zip(flat_abs, flat_shard):
    for dim, axes in enumerate(sharding.spec):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else axes
      size = math.prod(sharding.mesh.shape[a] for a in axes)
      if leaf.shape[dim] % size:
        raise UserError(f"{jax.tree_util.keystr(path)}: dimension {dim} of shape {leaf.shape} "
                         f"is not divisible by mesh axes {axes} of size {size}")


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, *args) -> tuple[Any, Any]:
  """Run a Flax `init_fn(*args)` straight into its shardings; returns (params, shardings).

  Shapes come from `jax.eval_shape`, so the model is never materialised whole on one device.
  Returned params are unboxed plain dicts.
  """
  _, shardings = param_shardings(init_fn, mesh, *args)
  params = run_once(lambda *a: nn.unbox(init_fn(*a)), *args, out_shardings=shardings)
  return params, shardings


def param_shardings(init_fn: Callable[..., Any], mesh: Mesh, *args) -> tuple[Any, Any]:
  """Abstract params (ShapeDtypeStructs carrying shardings) and the shardings themselves."""
  boxed = jax.eval_shape(init_fn, *args)
  shardings = logical_sharding(nn.get_partition_spec(boxed), mesh)
  abstract = nn.unbox(boxed)
  check_divisible(abstract, shardings)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """A batch array's sharding: its leading axis is the logical 'batch' (LOGICAL_RULES), the rest
  replicated. Every batch in the project (training, held-out loss, prompts) is placed by this."""
  return logical_sharding(PartitionSpec("batch", *([None] * (ndim - 1))), mesh)


def batch_shardings(batch: Any, mesh: Mesh) -> Any:
  """`batch_sharding` for every array of a batch tree (numpy arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: batch_sharding(mesh, len(x.shape)), batch)


def put_batch(batch: Any, mesh: Mesh) -> Any:
  """A host batch (every process holds all of it) -> global arrays sharded by
  `batch_shardings`; each process supplies only its addressable shards."""
  return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i: x[i]),
                      batch, batch_shardings(batch, mesh))


def process_rows(n_rows: int, mesh: Mesh) -> list[int]:
  """The rows of an `n_rows`-row batch that this process's devices hold (every batch array is
  split by rows alike: `batch_sharding`)."""
  index = batch_sharding(mesh, 1).addressable_devices_indices_map((n_rows,))
  return sorted({r for (rows,) in index.values() for r in range(*rows.indices(n_rows))})


def put_rows(local: Any, rows: list[int], n_rows: int, mesh: Mesh) -> Any:
  """Global `n_rows`-row arrays from this process's `rows` of the batch (`local[i]` is row
  `rows[i]`), sharded by `batch_shardings`: a process reads only the rows it holds."""
  position = {r: i for i, r in enumerate(rows)}

  def put(x, sharding):
    def shard(index):
      wanted = range(*index[0].indices(n_rows))
      return x[[position[r] for r in wanted]][(slice(None), *index[1:])]
    return jax.make_array_from_callback((n_rows, *x.shape[1:]), sharding, shard)

  return jax.tree.map(put, local, batch_shardings(local, mesh))


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
  """Context for tracing sharded code: the mesh plus the logical-axis rules."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    yield


def batch_multiple(mesh: Mesh) -> int:
  """Batch sizes must be multiples of this to shard over ('data', 'fsdp')."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_rows(n: int, mesh: Mesh) -> int:
  """The rows a batch of `n` (at least 1) takes on `mesh`: n rounded up to `batch_multiple`."""
  multiple = batch_multiple(mesh)
  return -(-max(n, 1) // multiple) * multiple
