"""`train [--config NAME|FILE.py[:arg]] [--resume] [--config.a.b=value ...]`: train a SPHINX.

With no --config, the embedded default (launch/configs/default.py): a tiny SPHINX trained with
the whole method on the synthetic world, then evaluated. A config returns an Experiment (one
training run) or a Recipe (sphinx_jax.recipe.chain: stages, mixing, report; it always continues
where it stopped).

Multi-host: `jax.distributed.initialize` runs automatically on TPU pods and SLURM jobs of several
tasks, or explicitly with --coordinator, --num-processes and --process-id (CPU processes talk
through gloo). The same step code runs on one process or many.
"""
import argparse
import logging
import os

from launch import config_files

from sphinx_jax.util.errors import UserError

HELP = "train a SPHINX from a config (default: the embedded tiny SPHINX on synthetic data)"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="default",
                      help="a shipped config's name or a python file whose get_config() returns "
                           "a train.config.Experiment or a recipe.chain.Recipe; NAME:arg calls "
                           f"get_config(arg). Shipped: {', '.join(config_files.shipped())} "
                           "(default: %(default)s)")
  parser.add_argument("--resume", action="store_true",
                      help="continue from the newest good checkpoint in the workdir (the run's "
                           "saved config must compute the same run)")
  parser.add_argument("--resume-with-changes", default="", metavar="FIELDS",
                      help="with --resume: config fields (comma list, e.g. "
                           "train.steps,train.optim.lr; a prefix such as data names all its "
                           "fields) that may differ from the saved run config")
  parser.add_argument("--coordinator", default=None,
                      help="host:port of process 0, for a multi-host run started by hand "
                           "(default: none; TPU pods and SLURM jobs are detected)")
  parser.add_argument("--num-processes", type=int, default=None,
                      help="with --coordinator: how many processes take part")
  parser.add_argument("--process-id", type=int, default=None,
                      help="with --coordinator: this process's index, 0 .. --num-processes - 1")
  parser.epilog = "Overrides: --config.train.steps=100 --config.workdir=runs/x (any field)."


def initialize_distributed(args: argparse.Namespace) -> None:
  import jax
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by CPU backends only
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in os.environ:
    jax.distributed.initialize()


def run(args: argparse.Namespace, overrides: list[str] = ()) -> int:
  initialize_distributed(args)
  from sphinx_jax.recipe import chain
  from sphinx_jax.train.loop import train
  config = config_files.load(args.config, list(overrides))
  if isinstance(config, chain.Recipe):
    chain.run(config)
    return 0
  allowed = tuple(f for f in args.resume_with_changes.split(",") if f)
  if allowed and not args.resume:
    raise UserError("--resume-with-changes needs --resume")
  metrics = train(config, resume=args.resume, resume_with_changes=allowed)
  if metrics:
    logging.getLogger("train").info("step %d: loss %.4f", metrics["step"], metrics["loss"])
  return 0
