"""Padding of the embedded default's stage-2 mixture, one sample per row against packed rows.

Writes a small synthetic world (data.synthetic), takes the default recipe's stage-2 data config
(launch/configs/default.py: its sources, weights, views and 400-slot rows) and reads batches of
it with `DataConfig.pack` = 1 and with several samples per row (models.batch.first_fit), at the
same slots per batch: prints the padding fraction, samples per row and samples per batch, and
the share of samples dropped for lack of room.

  python bench/packing.py [--batches 20] [--scenes 300] [--world DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from launch.configs import default  # noqa: E402
from sphinx_jax.configs import sphinx_preset  # noqa: E402
from sphinx_jax.data import pipeline, synthetic  # noqa: E402
from sphinx_jax.data.skips import SkipLog  # noqa: E402
from sphinx_jax.models.batch import padding_fraction  # noqa: E402

# (slots per row, rows per batch, samples drawn per row): every setting is 6,400 slots a batch
SETTINGS = ((400, 16, 1), (400, 16, 2), (800, 8, 4), (1600, 4, 8))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--scenes", type=int, default=300)
  parser.add_argument("--world", default="/tmp/sphinx_bench_packing",
                      help="where the world is written (kept for the next run)")
  parser.add_argument("--json", help="write the table here as JSON")
  args = parser.parse_args()
  recipe = default.get_config(f"workdir={args.world}")
  if not (Path(recipe.world.root) / "tokenizer.model").exists():
    synthetic.write_world(recipe.world.root, args.scenes, 8, seed=0)
  model = sphinx_preset(default.MODEL)
  stage2 = recipe.stage2.data.for_model(model.replace(view_plan=default.SUB_IMAGES, n_views=5))
  rows = []
  if True:
    print(f"{'slots/row':>10}{'rows':>6}{'pack':>6}{'padding':>10}{'samples/row':>13}"
          f"{'samples/batch':>15}{'dropped':>9}")
    for length, batch, pack in SETTINGS:
      data = dataclasses.replace(stage2, seq_len=length, batch_size=batch, pack=pack,
                                 max_images=2 * pack)
      reader = pipeline.batches(data, SkipLog())
      padding, samples = [], []
      for _ in range(args.batches):
        b = next(reader)
        padding.append(padding_fraction(b))
        samples.append(int(b["segment_ids"].max(axis=1).sum()))
      drawn = args.batches * batch * pack
      row = {"slots_per_row": length, "rows": batch, "pack": pack,
             "padding": float(np.mean(padding)), "samples_per_row": float(np.mean(samples)) / batch,
             "samples_per_batch": float(np.mean(samples)),
             "dropped": (drawn - sum(samples)) / drawn}
      rows.append(row)
      print(f"{length:>10}{batch:>6}{pack:>6}{row['padding']:>10.3f}{row['samples_per_row']:>13.2f}"
            f"{row['samples_per_batch']:>15.1f}{row['dropped']:>9.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
