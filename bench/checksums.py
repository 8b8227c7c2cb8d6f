"""What checksums cost: a ~1 GiB params checkpoint written and loaded, and the checksum pass alone.

The checksum is a reduction over the arrays where they live (checkpoints.checksums: on their
accelerator, or by numpy for arrays in host memory, both timed here); writing
computes it once per array before the save, loading once after the restore. The same run times
the Orbax write and restore without it (the raw `ocp_partial.save` / `load_pytree` calls), so
the load is timed again on a copy without `checksums.json` (restored and stacked alike, not
verified), so the ratios are measured, not assumed.

  python bench/checksums.py [--gib 1.0] [--workdir /tmp/checksum_bench]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from orbax.checkpoint.experimental.v1 import partial as ocp_partial

from sphinx_jax.checkpoints import checksums, params_io


def _params(gib: float) -> dict:
  """Layers of 4096 x 4096 float32 (64 MiB each), random so compression does not hide the IO."""
  n = max(1, round(gib * 16))
  rng = np.random.default_rng(0)
  return {"llm": {"layers": {"w": rng.standard_normal((n, 4096, 4096), np.float32)}}}


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gib", type=float, default=1.0)
  parser.add_argument("--workdir", type=Path, default=Path("/tmp/checksum_bench"))
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  args.workdir.mkdir(parents=True)
  params = _params(args.gib)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
  parts = list(params_io.disk_parts(params))
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), params)

  def raw_write():
    path = (args.workdir / "raw").absolute() / params_io.PARAMS_DIR
    for part in parts:
      ocp_partial.save(path, part)
    ocp_partial.finalize(path)

  on_device = jax.device_put(params["llm"]["layers"]["w"])
  checksums.checksum(on_device, "device")  # compile
  sums = _timed(lambda: checksums.checksum(on_device, "device"))
  host_sums = _timed(lambda: checksums.checksum(params["llm"]["layers"]["w"], "host"))
  raw_w = _timed(raw_write)
  ours_w = _timed(lambda: params_io.write(args.workdir / "ours", iter(parts), {"model": "bench"}))
  shutil.copytree(args.workdir / "ours", args.workdir / "unverified")
  (args.workdir / "unverified" / params_io.CHECKSUMS_FILE).unlink()
  raw_l = _timed(lambda: jax.block_until_ready(params_io.load(args.workdir / "unverified",
                                                               abstract)))
  ours_l = _timed(lambda: jax.block_until_ready(params_io.load(args.workdir / "ours", abstract)))
  gib = nbytes / 2**30
  print(f"{gib:.2f} GiB float32 on {jax.devices()[0].platform} ({jax.device_count()} device(s))")
  print(f"checksum pass alone: on the device {sums:.2f} s ({gib / sums:.2f} GiB/s), numpy on "
        f"the host {host_sums:.2f} s ({gib / host_sums:.2f} GiB/s)")
  print(f"write: Orbax {raw_w:.2f} s, with checksums {ours_w:.2f} s ({ours_w / raw_w:.2f}x)")
  print(f"load:  unverified {raw_l:.2f} s, verified {ours_l:.2f} s ({ours_l / raw_l:.2f}x)")
  shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
