"""The training loop's host/device overlap: steps/s of the tiny SPHINX config with the old order
(read the batch, run the step, wait for its metrics, repeat) and with `train.loop`'s (step N+1
dispatched and batch N+2 prepared before step N's metrics are read), in one process.

The old order is driven here from the same pieces the loop uses (setup, the jitted step, the
per-process reader, `put_rows`); the new one is `train.loop.train` itself, timed from its
metrics (the interval between reads). Both skip their first steps (compilation).

  python bench/loop.py [--steps 40]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from launch import config_files  # noqa: E402
from sphinx_jax import sharding  # noqa: E402
from sphinx_jax.data import pipeline  # noqa: E402
from sphinx_jax.data.skips import SkipLog  # noqa: E402
from sphinx_jax.train import loop  # noqa: E402
from sphinx_jax.train import step as train_step  # noqa: E402

WARMUP = 5


def old_order(exp, steps: int) -> list[float]:
  """Seconds per step when the host waits for each step before reading the next batch."""
  t = exp.train
  run = loop.setup(exp)
  data_config = exp.data.for_model(run.cfg)
  shapes = pipeline.batch_shapes(data_config)
  rows = sharding.process_rows(shapes["tokens"].shape[0], run.mesh)
  data = pipeline.batches(data_config, SkipLog(), rows)
  step_fn = loop.step_function(run, t, sharding.batch_shardings(shapes, run.mesh))
  state = train_step.init_state(run.cfg, run.tx, t.trainable, run.state_shardings, t.seed)
  times = []
  with sharding.use_mesh(run.mesh):
    for _ in range(steps):
      began = time.perf_counter()
      batch = sharding.put_rows(next(data), rows, shapes["tokens"].shape[0], run.mesh)
      state, out = step_fn(state, batch)
      jax.device_get(out)
      times.append(time.perf_counter() - began)
  return times[WARMUP:]


def new_order(exp) -> list[float]:
  """Seconds per step of `train.loop.train` (its metrics' `step_time`)."""
  loop.train(exp)
  rows = [json.loads(line) for line in (Path(exp.workdir) / "metrics.jsonl").open()]
  return [r["step_time"] for r in rows][WARMUP:]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=40)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    exp = config_files.load("tiny", [f"workdir={tmp}/run", f"train.steps={args.steps}",
                                     f"train.checkpoint_every={args.steps}"])
    exp = dataclasses.replace(exp, data=dataclasses.replace(exp.data, threads=2))
    old = old_order(exp, args.steps)
    new = new_order(exp)
  print(f"tiny SPHINX, batch {exp.data.batch_size}, {jax.device_count()} device(s), "
        f"{len(old)} timed steps each (median, min-max):")
  for name, times in (("old: wait for each step", old), ("new: metrics read one step late", new)):
    print(f"  {name:33s} {1 / statistics.median(times):6.2f} steps/s "
          f"({1 / max(times):.2f}-{1 / min(times):.2f})")
  print(f"  speed-up {statistics.median(old) / statistics.median(new):.2f}x")


if __name__ == "__main__":
  main()
