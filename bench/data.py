"""Stage-2 data pipeline throughput: samples/s with 448-px images and 5 views (SPHINX-1k).

Writes a synthetic LLaVA-style set (640x480 JPEGs, one per dialog, 3 turns) to a temp dir, then
times the full pipeline (JSONL read, JPEG decode, pad-to-square + PIL bicubic 448, the 5-view
tiling with the fp16 torch-exact resizes, tokenising and masking, batching) per reading-thread
count, and splits one image's cost into preprocessing and view tiling.

  python bench/data.py [--batches 30] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sphinx_jax.data import pipeline, sources  # noqa: E402
from sphinx_jax.data.image import VIEW_PLANS, preprocess  # noqa: E402
from sphinx_jax.data.sample import views  # noqa: E402
from sphinx_jax.data.skips import SkipLog  # noqa: E402

TOKENIZER = Path(__file__).parent.parent / "launch" / "configs" / "data_example" / "tokenizer.model"
WORDS = "the a red green blue circle square left right top of in is image shape how many".split()


def write_data(root: Path, n: int) -> Path:
  rng = np.random.default_rng(0)
  records = []
  for i in range(n):
    ramp = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    pixels = ramp * rng.uniform(0.3, 1.0, (1, 1, 3)) + rng.normal(0, 20, (480, 640, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{i}.jpg", quality=90)
    turns = []
    for t in range(3):
      question = " ".join(rng.choice(WORDS, 12)) + "?"
      turns += [{"from": "human", "value": ("<image>\n" if t == 0 else "") + question},
                {"from": "gpt", "value": " ".join(rng.choice(WORDS, 40)) + "."}]
    records.append({"image": f"{i}.jpg", "conversations": turns})
  path = root / "dialogs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return path


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", type=int, default=30)
  parser.add_argument("--batch", type=int, default=4)
  args = parser.parse_args()
  plan = VIEW_PLANS["sphinx_1k"]
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    data = write_data(root, args.batch * (args.batches + 2))
    image = Image.open(root / "0.jpg").convert("RGB")
    views([image], plan)  # compile the tiling once
    start = time.perf_counter()
    pixels = [preprocess(image, plan.image_size) for _ in range(10)]
    pre = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    for _ in range(10):
      views([image], plan)
    total = (time.perf_counter() - start) / 10
    print(f"one image: preprocess {pre * 1e3:.1f} ms, preprocess + 5 views {total * 1e3:.1f} ms "
          f"(views {pixels[0].shape} -> vit 5x224, convnext 5x256)")
    for threads in (1, 2, 4):
      config = pipeline.DataConfig(
          tokenizer=str(TOKENIZER), sources=(sources.Conversations(str(data), tmp),),
          view_plan="sphinx_1k", tokens_per_image=5 * 291, seq_len=2048, max_images=1,
          batch_size=args.batch, threads=threads)
      skips = SkipLog()
      it = iter(pipeline.batches(config, skips))
      next(it)  # warm-up: opens the source, fills the prefetch buffer
      start = time.perf_counter()
      for _ in range(args.batches):
        batch = next(it)
      rate = args.batches * args.batch / (time.perf_counter() - start)
      assert not len(skips) and batch["images"]["vit"].shape == (args.batch, 1, 5, 224, 224, 3)
      print(f"stage-2 pipeline, {threads} reading thread(s): {rate:.1f} samples/s "
            f"({os.cpu_count()} cores)")


if __name__ == "__main__":
  main()
