"""`eval --checkpoint DIR --benchmark NAME --data DIR`: score a SPHINX checkpoint on a benchmark.

Reads the benchmark's released files under --data (see sphinx_jax/eval/formats_*.py for each
layout), asks every question in the conv_v1_2 template with the reference's evaluation prompt,
decodes greedily in batches sharded over all devices, appends each answer to
OUT/predictions.jsonl as its batch finishes and writes OUT/summary.json. Rerunning the same
command resumes: finished samples are not recomputed.
"""
import argparse
import json
from pathlib import Path

from launch import QUANTIZE
from sphinx_jax.util.errors import UserError

HELP = "evaluate a SPHINX checkpoint on a benchmark (resumable; predictions + summary)"


def benchmarks() -> dict:
  """The published benchmarks and the recipe's synthetic_* ones."""
  from sphinx_jax.eval.benchmarks import BENCHMARKS
  from sphinx_jax.recipe import synthetic_benchmarks
  synthetic_benchmarks.register()
  return BENCHMARKS


class _Names:
  """argparse choices read on first use: `python -m launch --help` imports no benchmark code."""

  def __contains__(self, name) -> bool:
    return name in benchmarks()

  def __iter__(self):
    return iter(sorted(benchmarks()))


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", type=Path, required=True,
                      help="a params directory: written by `launch convert` or `launch mix`, or "
                           "by training (WORKDIR/<stage>/params_stepN)")
  parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                      help="load the LLM's matmul weights quantized (int8: per output channel; "
                           "int4 / nf4: groups of 128), the towers at full precision; a checkpoint "
                           "converted with --quantize loads quantized without it")
  parser.add_argument("--benchmark", required=True, choices=_Names(), metavar="NAME",
                      help="one of: %(choices)s")
  parser.add_argument("--data", type=Path, required=True, help="the benchmark's files")
  parser.add_argument("--out", type=Path, default=None,
                      help="output folder (default: eval_results/<benchmark>-<split>[-<k>shot])")
  parser.add_argument("--split", default=None, help="split / file to evaluate "
                      "(default per benchmark, e.g. val2014 for vqav2, test for coco_captions)")
  parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="prompts per call, rounded up to a multiple of the devices")
  parser.add_argument("--shots", type=int, default=0,
                      help="coco_captions: in-context demonstrations per query (0/4/8/16)")
  parser.add_argument("--seed", type=int, default=0, help="demonstration sampling seed")
  parser.add_argument("--max-new-tokens", type=int, default=None,
                      help="override the benchmark's generation budget")
  parser.add_argument("--scorer", default=None,
                      help="where the field scores a benchmark two ways: vqav2/okvqa/vizwiz/"
                           "textvqa: vqa (GT-Vision-Lab's vqaEval.py, default), accessory "
                           "(LLaMA2-Accessory's copy: SPHINX's val numbers), m4c (TextVQA's own "
                           "EvalAI scorer); coco_captions: cider (default) or pycocoevalcap "
                           "(runs it; Java). A rerun with another scorer reuses the predictions")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                      help="compute/param dtype (default: the checkpoint's)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_counts(args: argparse.Namespace) -> None:
  """Counts a run cannot do without, checked before the model loads (minutes, for a real one):
  `--limit -1` would silently drop the last sample, `--max-new-tokens 0` mean the default."""
  for flag, value, least in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                             ("--shots", args.shots, 0),
                             ("--max-new-tokens", args.max_new_tokens, 1)):
    if value is not None and value < least:
      raise UserError(f"{flag} {value}: must be at least {least}")


def run(args: argparse.Namespace) -> int:
  from sphinx_jax import Sphinx
  from sphinx_jax.checkpoints.params_io import read_config
  from sphinx_jax.eval.runner import evaluate
  check_counts(args)
  benchmarks()[args.benchmark].scorer(args.scorer)  # a bad --scorer fails before the model loads
  read_config(args.checkpoint)  # a missing/bad config.json fails before anything is loaded
  if not args.data.is_dir():
    raise FileNotFoundError(f"{args.data}: no such data directory")
  split = args.split or benchmarks()[args.benchmark].split
  out = args.out or Path("eval_results") / "-".join(
      [args.benchmark] + ([split] if split else []) + ([f"{args.shots}shot"] if args.shots else []))
  model = Sphinx.from_pretrained(args.checkpoint, dtype=args.dtype, quantize=args.quantize)
  summary = evaluate(model, args.benchmark, args.data, out, split=args.split, limit=args.limit,
                     batch_size=args.batch_size, shots=args.shots, seed=args.seed,
                     max_new_tokens=args.max_new_tokens,
                     checkpoint=str(args.checkpoint.resolve()), scorer=args.scorer,
                     progress=not args.no_progress)
  print(json.dumps(summary, indent=1))
  print(f"predictions: {out / 'predictions.jsonl'}  summary: {out / 'summary.json'}")
  return 0
