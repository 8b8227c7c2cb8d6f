"""`compile --config CONFIG[:arg] --topology NAME [--num-slices N] [--json FILE]
[--mode train|decode [--quantize int8|int4]] [--config.x=y ...]`: compile a config's train
step for a TPU slice on this host (no TPU needed: the libtpu wheel of requirements-compile.txt
is the compiler) and report
per-chip memory, whether it fits, and the step time and tokens/s/chip at 40% and 60% MFU.

The step is the one `launch train` runs (mesh, rules, shardings, donation); no weights are
allocated and neither the data nor the init checkpoint needs to exist. An out-of-memory compile
is a result (`fits: false` with the compiler's reason), not an error. Topology names are Google
Cloud's: v5e-N / v6e-N count chips, v4-N / v5p-N TensorCores (v5p-128 = 64 chips); a torus such
as v5p:4x4x4 is taken as it is.
"""
import argparse
import json
import os

from launch import QUANTIZE, config_files

from sphinx_jax.util.files import write_atomic

HELP = "compile a config's train (or decode) step for a TPU slice and report its memory"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True,
                      help="a shipped config's name or a python file (as for train); a recipe "
                           "is refused: name one stage's config")
  parser.add_argument("--topology", required=True,
                      help="a TPU slice: v5p-64, v5e-8, v6e-16, v4-32, ... or v5p:4x4x4")
  parser.add_argument("--num-slices", type=int, default=1, help="slices joined by DCN")
  parser.add_argument("--mode", choices=("train", "decode"), default="train",
                      help="the train step, or prefill + one decode step of the inference path")
  parser.add_argument("--batch", type=int, default=1, help="--mode decode: rows decoded together")
  parser.add_argument("--max-len", type=int, default=2048,
                      help="--mode decode: the KV cache length (a prefill of max-len - 1)")
  parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                      help="--mode decode: the LLM's matmul weights quantized (as `chat "
                           "--quantize` serves them)")
  parser.add_argument("--json", default=None, metavar="FILE", help="also write the report here")
  parser.epilog = ("Overrides: --config.data.batch_size=128 --config.train.micro_batches=1 "
                   "(any field).")


def _gib(n: int) -> str:
  return f"{n / 2 ** 30:.2f} GiB"


def summary(report: dict) -> str:
  weights = f" ({report['quantize']} LLM)" if report.get("quantize") else ""
  lines = [f"{report['mode']} step{weights} of {report['tokens_per_step']:,} tokens on "
           f"{report['topology']}"
           f" ({report['chips']} chips, {report['torus']}), mesh {report['mesh']}; "
           f"compiled in {report['compile_seconds']} s"]
  if report["bytes_per_chip"] is None:
    lines.append(f"does NOT fit {_gib(report['hbm_bytes_per_chip'])} per chip: "
                 f"{report['reason']}")
    return "\n".join(lines)
  b = report["bytes_per_chip"]
  lines.append("per chip: " + ", ".join(f"{k} {_gib(v)}" for k, v in b.items())
               + f" of {_gib(report['hbm_bytes_per_chip'])}: "
               + ("fits" if report["fits"] else "does NOT fit"))
  for key, seconds in report["step_seconds"].items():
    mfu = key.removeprefix("mfu_")
    lines.append(f"at {float(mfu):.0%} MFU: {seconds:.3f} s/step, "
                 f"{report['tokens_per_s_per_chip'][key]:,.0f} tokens/s/chip")
  return "\n".join(lines)


def run(args: argparse.Namespace, overrides: list[str] = ()) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the slice is requested explicitly; this
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # host's own accelerators stay untouched
  from sphinx_jax.aot.compile import compile_for
  from sphinx_jax.aot.topology import parse
  from sphinx_jax.train.config import Experiment
  from sphinx_jax.util.errors import UserError
  config = config_files.load(args.config, list(overrides))
  if not isinstance(config, Experiment):
    raise UserError(f"{args.config}: a recipe; compile one of its stages' configs")
  report = compile_for(config, parse(args.topology, args.num_slices), args.mode, args.batch,
                       args.max_len, args.quantize)
  print(summary(report))
  if args.json:
    write_atomic(args.json, json.dumps(report, indent=1) + "\n")
    print(f"report: {args.json}")
  return 0
