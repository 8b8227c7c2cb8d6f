"""TPU slices by their usual names, as devices the TPU compiler accepts on a CPU-only host.

Names follow Google Cloud's accelerator types: `v5e-N` and `v6e-N` count chips; `v4-N` and
`v5p-N` count TensorCores, two per chip (v5p-128 is 64 chips). A topology string (`v5p:4x4x4`,
`v5e:2x4`) is taken as it is. The libtpu wheel (requirements-compile.txt) provides the compiler.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re

from sphinx_jax.util.errors import UserError

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip specifications."""

  generation: str  # the topology prefix: 'v4', 'v5e', 'v5p', 'v6e'
  hbm_bytes: int
  bf16_flops: float  # peak FLOP/s
  hbm_bandwidth: float  # bytes/s
  cores_per_chip: int  # how many the usual name counts per chip
  dims: int  # 2-D (v5e, v6e) or 3-D (v4, v5p) torus


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 1.2e12, 2, 3),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 0.82e12, 1, 2),
    "v5p": Chip("v5p", 95 * GiB, 459e12, 2.77e12, 2, 3),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1.64e12, 1, 2),
}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str  # as the user gave it
  chip: Chip
  shape: tuple[int, ...]  # chips along each torus axis
  num_slices: int = 1

  @property
  def chips(self) -> int:
    return math.prod(self.shape) * self.num_slices

  @property
  def topology(self) -> str:
    return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"


def _shape(chips: int, dims: int) -> tuple[int, ...]:
  """The usual torus of `chips` chips: 2-D 2x2, 2x4, 4x4, ... 16x16; 3-D 2x2x1, 2x2x2, 2x2x4,
  2x4x4, 4x4x4, 4x4x8, ..."""
  if chips < 1 or chips & (chips - 1):
    raise UserError(f"{chips} chips: slices of a power-of-two chip count are supported")
  order = (1, 0) if dims == 2 else (0, 1, 2, 2, 1, 0)  # which axis doubles next (then cycles)
  cycle = order if dims == 2 else order[3:]
  shape = [1] * dims
  for i in range(int(math.log2(chips))):
    shape[order[i] if i < len(order) else cycle[(i - len(order)) % len(cycle)]] *= 2
  return tuple(shape)


def parse(name: str, num_slices: int = 1) -> Slice:
  """'v5p-64' / 'v5e-8' / 'v5p:4x4x4' -> Slice."""
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)(?:-(\d+)|:(\d+(?:x\d+)+))", name.strip().lower())
  if not m:
    raise UserError(f"unknown TPU topology {name!r}; use e.g. v5p-64, v5e-8, v6e-16, v4-32 or "
                    f"v5p:4x4x4 (generations: {', '.join(CHIPS)})")
  chip = CHIPS[m.group(1)]
  if m.group(3):
    shape = tuple(int(d) for d in m.group(3).split("x"))
    if len(shape) != chip.dims:
      raise UserError(f"{name}: {chip.generation} topologies are {chip.dims}-D")
  else:
    count = int(m.group(2))
    if count % chip.cores_per_chip:
      raise UserError(f"{name}: {chip.generation}-N counts TensorCores, {chip.cores_per_chip} "
                      "per chip; N must be even")
    shape = _shape(count // chip.cores_per_chip, chip.dims)
  if num_slices < 1:
    raise UserError(f"--num-slices {num_slices}: must be at least 1")
  return Slice(name, chip, shape, num_slices)


def devices(tpu: Slice) -> list:
  """The slice's devices, for compiling only (nothing can run on them here)."""
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server off a TPU VM
  try:
    from jax.experimental import topologies
    host = tuple(min(s, 2) for s in tpu.shape) + (1,) * (3 - len(tpu.shape))
    desc = topologies.get_topology_desc(platform="tpu", topology_name=tpu.topology,
                                        chip_config_name="default",
                                        chips_per_host_bounds=host, num_slices=tpu.num_slices)
  except (RuntimeError, ValueError) as e:
    if "Unknown backend" in str(e) or "tpu" in str(e).lower() and "not" in str(e).lower():
      raise UserError("the TPU compiler is not installed: pip install -r "
                      f"requirements-compile.txt ({' '.join(str(e).split())})") from None
    raise
  return list(desc.devices)
