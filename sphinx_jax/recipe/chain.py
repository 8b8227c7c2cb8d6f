"""SPHINX's whole method as one resumable run, preceded by the towers' own pre-training:
world -> stage 0 (towers) -> stage 1 on two domains -> weight mixing -> stage 2 -> report.
`launch train` runs a `Recipe` the way it runs an `Experiment`; the embedded default
(launch/configs/default.py) is one, on the synthetic world (data.synthetic).

The chain is fixed by the method, not by the configs: stage1_real starts from stage 0's towers
(frozen from then on, a fresh LLM), stage1_synthetic from stage1_real's final params, the mix of
the two (`beta` * real + (1 - beta) * synthetic) is `workdir/mixed`, and stage2 starts from it.

Each step's output directory records the key of what built it (`stage.json`: a hash of its
config and of its inputs' keys, so a change anywhere upstream changes it). A step whose output
exists under the same key is reused (a training stage resumes from its checkpoints); under
another key (other sizes, another config, a `:fast` run in the same workdir) the old output is
moved to `workdir/stale/` with a warning and the step is rebuilt. Nothing is deleted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

from sphinx_jax.checkpoints.mix import mix
from sphinx_jax.data import synthetic
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.recipe import report, tower_eval
from sphinx_jax.train import towers
from sphinx_jax.train.config import Experiment
from sphinx_jax.train.loop import train
from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import building, write_atomic

log = logging.getLogger(__name__)
MARKER = "stage.json"
FINAL = "final_model"  # a link to the last stage's params, the model the report scores


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
  stage0: towers.TowersConfig
  stage1_real: Experiment
  stage1_synthetic: Experiment
  stage2: Experiment
  beta: float = 0.5
  report: Report = Report()


STEPS = ("world", "stage0", "stage1_real", "stage1_synthetic", "mixed", "stage2", "report")


def final_params(exp: Experiment) -> Path:
  return Path(exp.workdir) / f"params_step{exp.train.steps}"


def mixed_params(recipe: Recipe) -> Path:
  return Path(recipe.workdir) / "mixed"


def stages(recipe: Recipe) -> dict:
  """Stage 0 and the three training stages with their workdirs and starting points filled in
  (stage1_real from stage 0's export)."""
  root = Path(recipe.workdir)
  stage0 = dataclasses.replace(recipe.stage0, workdir=str(root / "stage0"))
  real = _placed(recipe.stage1_real, root / "stage1_real", towers.export_dir(stage0))
  synthetic_ = _placed(recipe.stage1_synthetic, root / "stage1_synthetic", final_params(real))
  stage2 = _placed(recipe.stage2, root / "stage2", mixed_params(recipe))
  return {"stage0": stage0, "stage1_real": real, "stage1_synthetic": synthetic_,
          "stage2": stage2}


def _placed(exp: Experiment, workdir: Path, init_from) -> Experiment:
  train_config = dataclasses.replace(exp.train, init_from=str(init_from))
  return dataclasses.replace(exp, workdir=str(workdir), train=train_config)


def keys(recipe: Recipe) -> dict[str, str]:
  """Each step's key: its config (workdir-relative) and the keys of the steps it reads."""
  exps = stages(recipe)
  plain = lambda value: _relative(value, recipe.workdir)  # noqa: E731
  out = {"world": _digest(plain(recipe.world), synthetic.VERSION)}
  out["stage0"] = _digest(out["world"], plain(exps["stage0"]))
  out["stage1_real"] = _digest(out["stage0"], plain(exps["stage1_real"]))
  out["stage1_synthetic"] = _digest(out["stage1_real"], plain(exps["stage1_synthetic"]))
  out["mixed"] = _digest(out["stage1_real"], out["stage1_synthetic"], recipe.beta)
  out["stage2"] = _digest(out["mixed"], plain(exps["stage2"]))
  out["report"] = _digest(out["stage0"], out["mixed"], out["stage2"], plain(recipe.report),
                          report.VERSION)
  return out


def _relative(config, workdir: str) -> str:
  text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=repr)
  return text.replace(str(Path(workdir)), "$WORKDIR")


def _digest(*parts) -> str:
  return hashlib.sha256(json.dumps(parts, default=repr).encode()).hexdigest()[:16]


def _recorded(directory: Path) -> dict:
  """The step's marker; an unreadable one counts as none (the step is set aside, rebuilt)."""
  marker = directory / MARKER
  try:
    recorded = json.loads(marker.read_text()) if marker.is_file() else {}
  except (json.JSONDecodeError, UnicodeDecodeError):
    log.warning("%s: unreadable; treating %s as built from another config", marker, directory)
    return {}
  return recorded if isinstance(recorded, dict) else {}


def _set_aside(root: Path, name: str, directory: Path, key: str) -> None:
  """Move `directory` to root/stale/ unless it was built under `key`."""
  if not directory.exists() or _recorded(directory).get("key") == key:
    return
  stale = root / "stale" / f"{name}-{_recorded(directory).get('key', 'unkeyed')}"
  stale = stale.with_name(f"{stale.name}-{int(time.time())}") if stale.exists() else stale
  stale.parent.mkdir(parents=True, exist_ok=True)
  directory.rename(stale)
  log.warning("%s was built from another config or inputs; moved it to %s and rebuilding it",
              directory, stale)


def _run_step(root: Path, name: str, directory: Path, key: str, done: Callable[[], bool],
              build: Callable[[], None], index: int) -> float:
  """Build step `name` into `directory` unless done under `key`; returns its build seconds."""
  _set_aside(root, name, directory, key)
  label = f"[{index}/{len(STEPS)}] {name}"
  if done():
    log.info("%s: done earlier, reusing %s", label, directory)
    return float(_recorded(directory).get("seconds", 0.0))
  log.info("%s: building %s", label, directory)
  began = time.perf_counter()
  build()
  seconds = _recorded(directory).get("seconds", 0.0) + time.perf_counter() - began
  directory.mkdir(parents=True, exist_ok=True)
  write_atomic(directory / MARKER, json.dumps({"key": key, "seconds": seconds}))
  log.info("%s: finished in %.0f s -> %s", label, seconds, directory)
  return seconds


def _start(directory: Path, key: str) -> None:
  """Record the key before a long step writes anything, so that its checkpoints resume."""
  directory.mkdir(parents=True, exist_ok=True)
  if not (directory / MARKER).is_file():
    write_atomic(directory / MARKER, json.dumps({"key": key, "seconds": 0.0}))


def _write_world(world: World, key: str) -> None:
  """The world at `world.root`, written aside and renamed (a half-written world is never used)."""
  with building(world.root) as tmp:
    synthetic.write_world(tmp, world.n_train, world.n_eval, world.seed)
    (tmp / MARKER).write_text(json.dumps({"key": key, "seconds": 0.0}))


def _stage0(config: towers.TowersConfig, world: Path, key: str) -> None:
  _start(Path(config.workdir), key)
  net, params = towers.pretrain(config, label=f"[2/{len(STEPS)}] stage0 (towers)")
  tokenizer = Tokenizer(config.data.tokenizer)
  results = {**tower_eval.zero_shot(net, params, world, tokenizer, config.data.view_plan,
                                    config.data.text_len),
             "knn": tower_eval.knn(net, params, world, config.data.view_plan)}
  write_atomic(Path(config.workdir) / towers.ZERO_SHOT, json.dumps(results, indent=1))


def _train(exp: Experiment, key: str, label: str) -> None:
  _start(Path(exp.workdir), key)
  train(exp, resume=True, label=label)


def ensure_world(recipe: Recipe) -> Path:
  """Step 1 alone: the world the stages read (`launch data` shows a recipe's samples before
  anything is trained)."""
  root, world = Path(recipe.workdir), Path(recipe.world.root)
  key = keys(recipe)["world"]
  _run_step(root, "world", world, key, world.is_dir, lambda: _write_world(recipe.world, key), 1)
  return world


def run(recipe: Recipe) -> dict:
  """Every step of the recipe not done yet; returns the report's results."""
  root = Path(recipe.workdir)
  root.mkdir(parents=True, exist_ok=True)
  exps = stages(recipe)
  world = Path(recipe.world.root)
  for name in ("stage1_real", "stage1_synthetic", "stage2"):
    if Path(exps[name].data.tokenizer).parent != world:
      raise UserError(f"{name} reads {exps[name].data.tokenizer}, not the world at {world}; "
                       f"build the stages from world.root (the default config takes workdir=)")
  k = keys(recipe)
  seconds = {}
  real, synth, stage2 = exps["stage1_real"], exps["stage1_synthetic"], exps["stage2"]
  steps = {
      "world": (world, world.is_dir, lambda: _write_world(recipe.world, k["world"])),
      "stage0": (Path(exps["stage0"].workdir),
                 lambda: (Path(exps["stage0"].workdir) / towers.ZERO_SHOT).is_file(),
                 lambda: _stage0(exps["stage0"], world, k["stage0"])),
      **{name: (Path(exps[name].workdir), lambda e=exps[name]: final_params(e).exists(),
                lambda e=exps[name], n=name, i=i: _train(e, k[n], f"[{i}/{len(STEPS)}] {n}"))
         for i, name in ((3, "stage1_real"), (4, "stage1_synthetic"), (6, "stage2"))},
      "mixed": (mixed_params(recipe), lambda: mixed_params(recipe).exists(),
                lambda: mix(final_params(real), final_params(synth), recipe.beta,
                            mixed_params(recipe))),
      "report": (root / "eval", lambda: (root / "eval" / report.RESULTS).is_file(),
                 lambda: _report(recipe, exps, k["report"])),
  }
  for index, name in enumerate(STEPS, 1):
    directory, done, build = steps[name]
    seconds[name] = _run_step(root, name, directory, k[name], done, build, index)
  _link(root / FINAL, final_params(stage2))
  results = json.loads((root / "eval" / report.RESULTS).read_text())
  results["seconds"] = seconds
  results["wall_seconds"] = sum(seconds.values())
  write_atomic(root / report.RESULTS, json.dumps(results, indent=1))
  print(report.table(results))
  print(report.next_steps(root, root / FINAL, world))
  return results


def _link(link: Path, target: Path) -> None:
  """`link` -> `target` (relative), replacing an older link."""
  if link.is_symlink():
    link.unlink()
  link.symlink_to(target.relative_to(link.parent))


def _report(recipe: Recipe, exps: dict, key: str) -> None:
  root = Path(recipe.workdir)
  _start(root / "eval", key)
  results = report.make(
      Path(recipe.world.root),
      {"start": towers.export_dir(exps["stage0"]),
       "real": final_params(exps["stage1_real"]),
       "synthetic": final_params(exps["stage1_synthetic"]),
       "mixed": mixed_params(recipe), "stage2": final_params(exps["stage2"])},
      {name: Path(exps[name].workdir) / "metrics.jsonl"
       for name in ("stage1_real", "stage1_synthetic", "stage2")},
      Path(exps["stage0"].workdir) / towers.ZERO_SHOT, exps["stage1_real"].data, recipe.report,
      root)
  write_atomic(root / "eval" / report.RESULTS, json.dumps(results, indent=1))
