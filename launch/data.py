"""`data --config CONFIG --show N`: check a data config before training.

Prints N samples as the model sees them (`<s>`, `<image>` per image block, supervised tokens in
⟦ ⟧) and the records skipped on the way, with file, record id and reason, and how many records
train with a note (e.g. `<image>` markers without an image). `--check` reads every record of
every source once first, so the summary covers the whole data set.
"""
import argparse
import runpy
from pathlib import Path

HELP = "print formatted training samples of a data config and the bad records it skips"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", type=Path, required=True,
                      help="python file defining DATA (a sphinx_jax.data.pipeline.DataConfig), or "
                           "a training config (get_config() -> Experiment): its data is shown")
  parser.add_argument("--show", type=int, default=4, metavar="N", help="samples to print")
  parser.add_argument("--check", action="store_true",
                      help="read every record once and report every bad one")


def load_config(path: Path):
  if not path.is_file():
    raise FileNotFoundError(f"{path}: config not found")
  namespace = runpy.run_path(str(path))
  if "DATA" in namespace:
    return namespace["DATA"]
  if "get_config" in namespace:
    return namespace["get_config"]().data
  raise ValueError(f"{path}: defines neither DATA (a sphinx_jax.data.pipeline.DataConfig) nor "
                   "get_config() (a training Experiment)")


def run(args: argparse.Namespace) -> int:
  from sphinx_jax.data import display, pipeline
  from sphinx_jax.data.skips import SkipLog
  from sphinx_jax.data.tokenizer import Tokenizer

  config = load_config(args.config)
  skips, tok = SkipLog(), Tokenizer(config.tokenizer)
  if args.check:
    good = pipeline.check(config, skips)
    print(f"read every record: {good} good, {len(skips)} skipped")
  names = config.source_names
  stream = iter(pipeline.samples(config, skips, tok))
  for i in range(args.show):
    s = next(stream)
    print(f"--- sample {i}: {names[s.source_id]} {s.record}: {int(s.image_mask.sum())} image "
          f"slots, {len(s.tokens)} tokens, {int(s.loss_mask.sum())} supervised")
    print(display.render(s.tokens, s.image_mask, s.loss_mask, tok, config.tokens_per_image))
  print(skips.summary())
  return 0
