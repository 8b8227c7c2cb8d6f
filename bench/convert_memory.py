"""Peak host memory of `launch convert meta` against the size of one layer and of the model.

Writes a random Meta-format checkpoint (2 model-parallel shards, bf16) of a ~1.2B-parameter
config, converts it in a child process, and samples that process's anonymous RSS (what the
conversion holds) and total RSS (which also counts clean, reclaimable pages of the mmap'd
shards) every 5 ms.

  python bench/convert_memory.py [--dim 2048] [--layers 16] [--workdir /tmp/convert_bench]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(path: Path, dim: int, layers: int, vocab: int) -> tuple[int, int]:
  import torch
  sys.path.insert(0, str(ROOT))
  from sphinx_jax.configs import LlamaConfig
  from tests.llama_refs import split_for_model_parallel
  hidden = LlamaConfig(dim=dim, n_heads=dim // 128, multiple_of=256).hidden_dim
  path.mkdir(parents=True)
  g = torch.Generator().manual_seed(0)
  rand = lambda *s: (torch.randn(*s, generator=g) * 0.02).to(torch.bfloat16)
  state = {"tok_embeddings.weight": rand(vocab, dim), "norm.weight": rand(dim),
           "output.weight": rand(vocab, dim)}
  for i in range(layers):
    p = f"layers.{i}."
    state.update({p + "attention.wq.weight": rand(dim, dim), p + "attention.wk.weight": rand(dim, dim),
                  p + "attention.wv.weight": rand(dim, dim), p + "attention.wo.weight": rand(dim, dim),
                  p + "feed_forward.w1.weight": rand(hidden, dim),
                  p + "feed_forward.w3.weight": rand(hidden, dim),
                  p + "feed_forward.w2.weight": rand(dim, hidden),
                  p + "attention_norm.weight": rand(dim), p + "ffn_norm.weight": rand(dim)})
  for i, shard in enumerate(split_for_model_parallel(state, 2)):
    torch.save(shard, path / f"consolidated.{i:02d}.pth")
  (path / "params.json").write_text(json.dumps(
      {"dim": dim, "n_layers": layers, "n_heads": dim // 128, "multiple_of": 256,
       "norm_eps": 1e-5, "vocab_size": -1}))
  layer_bytes = 2 * (4 * dim * dim + 3 * hidden * dim + 2 * dim)
  total = sum(t.numel() for t in state.values()) * 2
  return layer_bytes, total


def peak_memory(cmd: list[str]) -> tuple[float, float, float]:
  """(peak anonymous RSS, peak RSS, seconds) of a child process, sampled from /proc."""
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
  peaks = {"RssAnon": 0, "VmRSS": 0}

  def sample():
    while proc.poll() is None:
      try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
          key = line.split(":")[0]
          if key in peaks:
            peaks[key] = max(peaks[key], int(line.split()[1]) * 1024)
      except (FileNotFoundError, ProcessLookupError):
        return
      time.sleep(0.005)

  start = time.perf_counter()
  thread = threading.Thread(target=sample)
  thread.start()
  proc.wait()
  thread.join()
  if proc.returncode:
    raise SystemExit(f"conversion failed with exit code {proc.returncode}")
  return peaks["RssAnon"], peaks["VmRSS"], time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--layers", type=int, default=16)
  parser.add_argument("--vocab", type=int, default=32000)
  parser.add_argument("--workdir", type=Path, default=Path("/tmp/convert_bench"))
  args = parser.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  layer, total = write_checkpoint(args.workdir / "meta", args.dim, args.layers, args.vocab)
  baseline, _, _ = peak_memory([sys.executable, "-c", "import jax, torch, orbax.checkpoint"])
  anon, rss, seconds = peak_memory([sys.executable, "-m", "launch", "convert", "meta", "--src",
                                    str(args.workdir / "meta"), "--dst", str(args.workdir / "out")])
  mb = lambda b: f"{b / 2**20:,.0f} MiB"
  print(f"model {mb(total)} (bf16), one layer {mb(layer)}, embedding {mb(args.vocab * args.dim * 2)}")
  print(f"convert meta: {seconds:.1f}s; peak anonymous RSS {mb(anon)} "
        f"({mb(anon - baseline)} above the {mb(baseline)} of importing jax+torch+orbax); "
        f"peak RSS incl. clean mmap pages {mb(rss)}")
  shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
  main()
