"""SPHINX's whole method as one resumable run: stage 1 on two domains, weight mixing, stage 2,
evaluation and a chat answer. `launch train` runs a `Recipe` the way it runs an `Experiment`;
the embedded default (configs/default.py) is one, on the synthetic world (data.synthetic).

Stages run in order, each in `workdir/<stage>` and resumed from its own checkpoints; a finished
stage (its params export exists) is skipped, so rerunning an interrupted recipe continues where
it stopped. The chain is fixed by the method, not by the configs: stage1_synthetic starts from
stage1_real's final params, the mix of the two (`beta` * real + (1 - beta) * synthetic) is
`workdir/mixed`, and stage2 starts from it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from sphinx_jax.checkpoints.mix import mix
from sphinx_jax.data import synthetic
from sphinx_jax.eval import report
from sphinx_jax.eval.runner import write_atomic
from sphinx_jax.train.config import Experiment
from sphinx_jax.train.loop import train

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class World:
  """The synthetic world the recipe writes (once) and trains on: `root` must be where the stage
  configs' sources point."""

  root: str
  n_train: int
  n_eval: int
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Report:
  """What the evaluation covers: `limit` held-out samples per benchmark (None: all), and the
  chat example (an image of the eval split and a question)."""

  limit: int | None = None
  batch_size: int = 64
  chat_image: str = "images/00000.png"
  chat_prompt: str = "Detect all objects shown in the image."


@dataclasses.dataclass(frozen=True)
class Recipe:
  workdir: str
  world: World
  stage1_real: Experiment
  stage1_synthetic: Experiment
  stage2: Experiment
  beta: float = 0.5
  report: Report = Report()


def final_params(exp: Experiment) -> Path:
  return Path(exp.workdir) / f"params_step{exp.train.steps}"


def mixed_params(recipe: Recipe) -> Path:
  return Path(recipe.workdir) / "mixed"


def stages(recipe: Recipe) -> dict[str, Experiment]:
  """The three training stages with their workdirs and starting points filled in (stage 1 on
  the real domain starts where its config says: from scratch, or a converted checkpoint)."""
  root = Path(recipe.workdir)
  real = _placed(recipe.stage1_real, root / "stage1_real", recipe.stage1_real.train.init_from)
  synthetic = _placed(recipe.stage1_synthetic, root / "stage1_synthetic", final_params(real))
  stage2 = _placed(recipe.stage2, root / "stage2", mixed_params(recipe))
  return {"stage1_real": real, "stage1_synthetic": synthetic, "stage2": stage2}


def _train_once(exp: Experiment) -> None:
  """Train `exp` unless its final params exist (resuming from its checkpoints if any)."""
  if not final_params(exp).exists():
    log.info("%d steps in %s", exp.train.steps, exp.workdir)
    train(exp, resume=True)


def _placed(exp: Experiment, workdir: Path, init_from) -> Experiment:
  train_config = dataclasses.replace(exp.train, init_from=init_from and str(init_from))
  return dataclasses.replace(exp, workdir=str(workdir), train=train_config)


def write_world(world: World) -> Path:
  """The world at `world.root`, written once (atomically: a half-written world is never used)."""
  root = Path(world.root)
  if root.exists():
    return root
  tmp = root.with_name(f".{root.name}.partial")
  shutil.rmtree(tmp, ignore_errors=True)
  synthetic.write_world(tmp, world.n_train, world.n_eval, world.seed)
  tmp.rename(root)
  return root


def run(recipe: Recipe) -> dict:
  """Every step of the recipe not done yet; returns the report's results."""
  workdir = Path(recipe.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  exps = stages(recipe)
  for name, exp in exps.items():
    if Path(exp.data.tokenizer).parent != Path(recipe.world.root):
      raise ValueError(f"{name} reads {exp.data.tokenizer}, not the world at {recipe.world.root}; "
                       f"build the stages from world.root (configs/default.py takes workdir=)")
  world = write_world(recipe.world)
  _train_once(exps["stage1_real"])
  _train_once(exps["stage1_synthetic"])
  if not mixed_params(recipe).exists():
    log.info("mixing: %g * stage1_real + %g * stage1_synthetic", recipe.beta, 1 - recipe.beta)
    mix(final_params(exps["stage1_real"]), final_params(exps["stage1_synthetic"]), recipe.beta,
        mixed_params(recipe))
  _train_once(exps["stage2"])
  results = report.make(
      world, {"real": final_params(exps["stage1_real"]),
              "synthetic": final_params(exps["stage1_synthetic"]),
              "mixed": mixed_params(recipe), "stage2": final_params(exps["stage2"])},
      {name: Path(e.workdir) / "metrics.jsonl" for name, e in exps.items()},
      exps["stage1_real"].data, recipe.report, workdir)
  write_atomic(workdir / "results.json", json.dumps(results, indent=1))
  return results
