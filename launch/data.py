"""`data --config CONFIG --show N`: check a data config before training.

Prints N samples as the model sees them (`<s>`, `<image>` per image block, supervised tokens in
⟦ ⟧) and the records skipped on the way, with file, record id and reason, and how many records
train with a note (e.g. `<image>` markers without an image). `--check` reads every record of
every source once first, so the summary covers the whole data set. CONFIG is named as for
`train` (a shipped name or a file, `:arg`, `--config.a.b=value` overrides); it defines DATA (a
DataConfig) or get_config() (an Experiment: its data; a recipe: each training stage's data,
after writing the recipe's world if it is not there yet). An experiment's data is laid out for
its model (the checkpoint it starts from, or, before that exists, the preset it names).
"""
import argparse
import dataclasses
from pathlib import Path

from launch import config_files

from sphinx_jax.util.errors import UserError

HELP = "print formatted training samples of a data config and the bad records it skips"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True,
                      help="a shipped config's name or a python file defining DATA (a "
                           "sphinx_jax.data.pipeline.DataConfig) or get_config() (an "
                           "Experiment or a recipe); NAME:arg calls get_config(arg)")
  parser.add_argument("--show", type=int, default=4, metavar="N",
                      help="samples to print (per stage of a recipe)")
  parser.add_argument("--check", action="store_true",
                      help="read every record once and report every bad one")
  parser.epilog = "Overrides: --config.seq_len=512, --config.stage2.data.seq_len=512 (any field)."


def data_configs(spec: str, overrides: list[str]) -> dict:
  """{label: DataConfig} of the config file `spec`."""
  module, arg = config_files.load_module(spec)
  if hasattr(module, "DATA"):
    return {"data": config_files.apply_overrides(module.DATA, overrides)}
  if not hasattr(module, "get_config"):
    raise UserError(f"{spec}: defines neither DATA (a sphinx_jax.data.pipeline.DataConfig) "
                     "nor get_config() (an Experiment or a recipe)")
  from sphinx_jax.recipe import chain
  config = config_files.apply_overrides(
      module.get_config() if arg is None else module.get_config(arg), overrides)
  if isinstance(config, chain.Recipe):
    chain.ensure_world(config)
    return {name: _laid_out(exp) for name, exp in chain.stages(config).items()
            if name != "stage0"}
  return {"data": _laid_out(config)}


def _laid_out(exp):
  """The experiment's data with its model's image geometry."""
  from sphinx_jax.train.loop import model_config
  train = exp.train
  if train.init_from and not Path(train.init_from).exists():  # a stage not trained yet
    train = dataclasses.replace(train, init_from=None)
  return exp.data.for_model(model_config(train))


def run(args: argparse.Namespace, overrides: list[str] = ()) -> int:
  from sphinx_jax.data import display, pipeline
  from sphinx_jax.data.skips import SkipLog
  from sphinx_jax.data.tokenizer import Tokenizer

  for label, config in data_configs(args.config, list(overrides)).items():
    if label != "data":
      print(f"=== {label}")
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
