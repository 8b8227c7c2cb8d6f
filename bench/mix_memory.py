"""Peak host memory of `launch mix` against the size of one leaf and of the model.

Writes two random float32 LLaMA params checkpoints (~1.1 GB each at the defaults) layer by layer,
mixes them in a child process, and samples that process's anonymous RSS every 5 ms against the
baseline of a child that only imports what `launch mix` imports.

  python bench/mix_memory.py [--dim 1024] [--layers 16] [--workdir /tmp/mix_bench]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.convert_memory import peak_memory  # noqa: E402


def write_checkpoint(path: Path, dim: int, layers: int, vocab: int, seed: int) -> tuple[int, int]:
  from sphinx_jax.checkpoints import params_io
  from sphinx_jax.checkpoints.llama import llm_parts
  from sphinx_jax.configs import LlamaConfig
  cfg = LlamaConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=dim // 128,
                    multiple_of=256, param_dtype="float32", dtype="float32")
  rng = np.random.default_rng(seed)
  sizes = []

  def get(key: str, shape: tuple) -> np.ndarray:
    sizes.append(int(np.prod(shape)) * 4)
    return rng.standard_normal(shape, np.float32) * np.float32(0.02)

  params_io.write(path, llm_parts(get, cfg), {"model": "llama", "llm": cfg.to_dict()})
  return sum(sizes), max(sizes)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--layers", type=int, default=16)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--workdir", type=Path, default=Path("/tmp/mix_bench"))
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  total, leaf = write_checkpoint(args.workdir / "a", args.dim, args.layers, args.vocab, 0)
  write_checkpoint(args.workdir / "b", args.dim, args.layers, args.vocab, 1)
  baseline, _, _ = peak_memory([sys.executable, "-c",
                                "import launch.__main__, sphinx_jax.checkpoints.mix"])
  anon, _, seconds = peak_memory([sys.executable, "-m", "launch", "mix", "--a",
                                  str(args.workdir / "a"), "--b", str(args.workdir / "b"),
                                  "--beta", "0.5", "--out", str(args.workdir / "out")])
  mb = lambda b: f"{b / 2**20:,.0f} MiB"
  print(f"two checkpoints of {mb(total)} each (float32), largest leaf {mb(leaf)}")
  print(f"mix: {seconds:.1f}s; peak anonymous RSS {mb(anon)} ({mb(anon - baseline)} above the "
        f"{mb(baseline)} of importing it)")
  shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
