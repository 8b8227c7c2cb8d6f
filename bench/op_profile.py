"""Where bench/llama.py's training step spends its time, in JAX and in PyTorch, op by op.

Traces a few training steps (forward + backward of the next-token loss) of the same ~110M fp32
decoder with `jax.profiler` (XLA:CPU records one event per executed op/thunk) and with
`torch.profiler`, sums op time per category (matmuls, elementwise/reduce fusions, copies and
layout changes, slices of the layer stack, the rest) and prints both side by side, with each
matmul category's achieved GFLOP/s. `--decode` profiles greedy decoding (batch 8) instead.

  python bench/op_profile.py [--steps 3] [--seq 256] [--batch 4] [--decode] [--top 12]
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import torch  # noqa: E402

from bench.llama import jax_greedy, models, torch_greedy, train_steps  # noqa: E402

# What an op does, by a word in its name (XLA thunk names; aten op names), checked in order;
# an op matching none is elementwise / reduce work (XLA fusions, aten::mul, ...).
JAX_KINDS = (("matmul", ("dot", "ynn_fusion", "xnn_fusion", "onednn", "convolution")),
             ("layer-stack slices", ("dynamic-slice", "dynamic-update-slice", "gather",
                                     "scatter")),
             ("copies, transposes, broadcasts", ("copy", "transpose", "broadcast",
                                                 "concatenate", "pad")),
             ("loop control", ("while", "conditional")))
TORCH_KINDS = (("matmul", ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul")),
               ("layer-stack slices", ("aten::slice", "aten::index", "aten::gather",
                                       "aten::select")),
               ("copies, transposes, broadcasts", ("aten::copy_", "aten::clone", "aten::cat",
                                                   "aten::contiguous", "aten::t",
                                                   "aten::transpose", "aten::expand")),
               ("loop control", ("autograd::", "torch::autograd::")))
ELEMENTWISE = "elementwise, reduce"
KINDS = [k for k, _ in JAX_KINDS] + [ELEMENTWISE]
# trace events that are the runtime around ops (dispatch, waits), not ops
JAX_RUNTIME = ("ThunkExecutor", "PjitFunction", "Pjrt", "PjRt", "MutexLock", "Threadpool",
               "SlinkyThreadPool", "ParseArguments", "Handle ", "Allocate", "Wait for", "end:",
               "$")


def kind_of(name: str, kinds) -> str:
  """XLA names contain their word (`copy_bitcast_fusion`); aten names equal it, or start with
  it where it ends in '::'."""
  for kind, words in kinds:
    if any(w in name if not name.startswith("aten::") else name == w for w in words):
      return kind
    if any(w.endswith("::") and name.startswith(w) for w in words):
      return kind
  return ELEMENTWISE


def jax_op_times(fn, steps: int) -> tuple[dict[str, float], float]:
  """({op name: total seconds over `steps` calls}, wall seconds per call) from a jax trace."""
  fn()
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        fn()
    wall = (time.perf_counter() - start) / steps
    path, = glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(JAX_RUNTIME):
      ops[e["name"]] += e["dur"] * 1e-6
  return ops, wall


def hlo_shapes(hlo_text: str) -> dict[str, str]:
  """{instruction name: its result shape} of an optimized HLO module's text."""
  shapes = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
    if m:
      shapes[m.group(1)] = m.group(2).split("{")[0]
  return shapes


def torch_op_times(fn, steps: int) -> tuple[dict[str, float], float]:
  """({aten op: self CPU seconds over `steps` calls}, wall seconds per call)."""
  fn()
  start = time.perf_counter()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      fn()
  wall = (time.perf_counter() - start) / steps
  ops = collections.Counter()
  for avg in prof.key_averages():
    ops[avg.key] += avg.self_cpu_time_total * 1e-6
  return ops, wall


def by_kind(ops: dict[str, float], kinds, steps: int) -> dict[str, float]:
  out = collections.Counter()
  for name, seconds in ops.items():
    out[kind_of(name, kinds)] += seconds / steps
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--decode", action="store_true", help="profile greedy decoding, batch 8")
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--top", type=int, default=12)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  hf, lm, n_params = models()
  if args.decode:
    new = args.new_tokens
    jax_fn, torch_fn = jax_greedy(lm, 8, new), torch_greedy(hf, 8, new)
    matmul_flops = 2 * n_params * 8 * (new + 31)
    shapes = {}  # several programs (prefill, decode loop): names only
    what = f"greedy decoding, batch 8, 31-token prompts + {new} new tokens"
  else:
    jax_fn, torch_fn, matmul_flops, lowered = train_steps(hf, lm, n_params, args.batch, args.seq)
    shapes = hlo_shapes(lowered.compile().as_text())
    what = f"training step (fwd+bwd), {args.batch} x {args.seq} tokens"

  jax_ops, jax_wall = jax_op_times(jax_fn, args.steps)
  torch_ops, torch_wall = torch_op_times(torch_fn, args.steps)
  jax_kinds = by_kind(jax_ops, JAX_KINDS, args.steps)
  jax_ops_by_kind = collections.Counter()
  for name, seconds in jax_ops.items():
    jax_ops_by_kind[name.split(".")[0]] += seconds
  torch_kinds = by_kind(torch_ops, TORCH_KINDS, args.steps)
  print(f"\n{what}; {n_params / 1e6:.0f}M params fp32, {os.cpu_count()} cores; "
        f"time per call, op times summed over threads")
  print(f"{'category':<32}{'JAX ms':>10}{'PyTorch ms':>12}")
  for kind in KINDS:
    print(f"{kind:<32}{1e3 * jax_kinds[kind]:>10.1f}{1e3 * torch_kinds[kind]:>12.1f}")
  print(f"{'all ops':<32}{1e3 * sum(jax_kinds.values()):>10.1f}"
        f"{1e3 * sum(torch_kinds.values()):>12.1f}")
  print(f"{'wall':<32}{1e3 * jax_wall:>10.1f}{1e3 * torch_wall:>12.1f}")
  for name, kinds in (("JAX", jax_kinds), ("PyTorch", torch_kinds)):
    print(f"{name} matmuls: {matmul_flops / kinds['matmul'] / 1e9:.1f} GFLOP/s "
          f"(model matmul FLOPs / matmul op time)")
  for name, ops in (("JAX (XLA ops, by kind)", jax_ops_by_kind),
                    ("PyTorch (aten, self time)", torch_ops)):
    print(f"\ntop {args.top} {name}:")
    for op, seconds in ops.most_common(args.top):
      print(f"  {op:<44}{1e3 * seconds / args.steps:>9.1f} ms")
  print(f"\ntop {args.top} JAX instructions (result shape from the optimized HLO):")
  for op, seconds in jax_ops.most_common(args.top):
    print(f"  {op:<44}{1e3 * seconds / args.steps:>9.1f} ms  {shapes.get(op, '')}")


if __name__ == "__main__":
  main()
