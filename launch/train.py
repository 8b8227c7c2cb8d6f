"""`train --config configs/X.py [--resume] [--config.a.b=value ...]`: train a SPHINX.

Multi-host: `jax.distributed.initialize` runs automatically on TPU pods and SLURM jobs of several
tasks, or explicitly with --coordinator, --num-processes and --process-id (CPU processes talk
through gloo). The same step code runs on one process or many.
"""
import argparse
import logging
import os
from pathlib import Path

HELP = "train a SPHINX (stage 1, stage 2, fine-tuning) from an experiment config"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", type=Path, required=True,
                      help="python file whose get_config() returns a train.config.Experiment")
  parser.add_argument("--resume", action="store_true",
                      help="continue from the latest checkpoint in the workdir")
  parser.add_argument("--coordinator", default=None, help="host:port of process 0 (multi-host)")
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)
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
  from sphinx_jax.train import config as train_config
  from sphinx_jax.train.loop import train
  experiment = train_config.load(args.config, list(overrides))
  metrics = train(experiment, resume=args.resume)
  if metrics:
    logging.getLogger("train").info("step %d: loss %.4f", metrics["step"], metrics["loss"])
  return 0
