"""Training: loss goes down, sharding does not change the losses, frozen towers stay frozen, and a
13B SPHINX-1k step compiles abstractly (kill -9 + resume: test_checkpoint_integrity; processes:
test_multiprocess)."""
import dataclasses
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from sphinx_jax import sharding
from sphinx_jax.configs import sphinx_preset
from launch import config_files
from sphinx_jax.train import config as train_config
from sphinx_jax.train import optimizer
from sphinx_jax.train import step as train_step
from sphinx_jax.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "launch" / "configs" / "tiny.py"


def _experiment(workdir, *overrides):
  return config_files.load(CONFIG, [f"workdir={workdir}", *overrides])


def _losses(workdir) -> dict[int, float]:
  """step -> loss; a step run twice (before a kill, again after resume) keeps its last value."""
  rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows}


def _launch(workdir, *extra, env=None) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "launch", "train", "--config", str(CONFIG),
       f"--config.workdir={workdir}", *extra],
      cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, start_new_session=True)


def test_loss_decreases_over_50_steps(tmp_path):
  train(_experiment(tmp_path, "train.steps=50"))
  losses = _losses(tmp_path)
  first, last = losses[1], np.mean([losses[s] for s in range(46, 51)])
  print(f"tiny SPHINX, 50 steps: first loss {first:.3f}, last (mean of 5) {last:.3f}")
  assert last < 0.6 * first
  assert (tmp_path / "params_step50" / "config.json").is_file()


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
  meshes = {"one": (1, 1, 1, 1), "eight": (8, 2, 2, 2)}
  for name, (devices, data, fsdp, tensor) in meshes.items():
    proc = _launch(tmp_path / name, "--config.train.steps=5", f"--config.train.mesh.data={data}",
                   f"--config.train.mesh.fsdp={fsdp}", f"--config.train.mesh.tensor={tensor}",
                   env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
  a, b = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
  print("1 device vs (2,2,2) mesh:", [(a[s], b[s]) for s in a])
  assert len(a) == 5 and max(abs(a[s] - b[s]) for s in a) < 1e-5


def test_frozen_towers_are_bit_identical_and_hold_no_optimizer_state():
  cfg = sphinx_preset("tiny")
  trainable = ("llm", "mixer")
  tx = optimizer.make(train_config.OptimConfig(lr=1e-2, warmup_steps=0), 3)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 8, 1))
  abstract, shardings = train_step.abstract_state(cfg, tx, trainable, mesh)
  state = train_step.init_state(cfg, tx, trainable, shardings)
  towers = {k: jax.tree.map(np.asarray, v) for k, v in state.params["params"].items()
            if k not in trainable}
  mixer = jax.tree.map(np.asarray, state.params["params"]["mixer"])
  rng = np.random.default_rng(0)
  k, t = cfg.image_tokens, 48
  tokens = rng.integers(3, 512, (8, t)).astype(np.int32)
  image_mask = np.zeros((8, t), bool)
  image_mask[:, 1:1 + k] = True
  batch = {"tokens": tokens, "image_mask": image_mask, "loss_mask": ~image_mask,
           "valid": np.ones((8, t), bool), "segment_ids": np.ones((8, t), np.int32),
           "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (8, t)),
           "source_id": np.zeros((8, t), np.int32),
           "images": {name: rng.standard_normal((8, 1, 1, s, s, 3)).astype(np.float32)
                      for name, s in cfg.view_sizes.items()}}
  step = train_step.jit_train_step(train_step.make_train_step(cfg, tx, trainable), shardings,
                                   sharding.batch_shardings(batch, mesh), mesh)
  with sharding.use_mesh(mesh):
    for _ in range(3):
      state, _ = step(state, batch)
  for name, before in towers.items():
    jax.tree.map(np.testing.assert_array_equal, before, state.params["params"][name])
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda a, b: np.array_equal(a, np.asarray(b)), mixer, state.params["params"]["mixer"])))
  owners = {next(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
            for path, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
            if any(isinstance(k, jax.tree_util.DictKey) for k in path)}
  assert owners == set(trainable), owners  # Adam moments exist for the LLM and mixer only


@pytest.mark.parametrize("fsdp", [8])
def test_abstract_compile_of_the_13b_sphinx_1k_step(fsdp):
  cfg = sphinx_preset("sphinx_1k")
  cfg = cfg.replace(llm=cfg.llm.replace(param_dtype="float32", dtype="bfloat16",
                                        remat_policy="full"))
  trainable = ("llm", "mixer")
  tx = optimizer.make(train_config.OptimConfig(), 1000)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, fsdp, 1))
  abstract, shardings = train_step.abstract_state(cfg, tx, trainable, mesh)
  rows, length = 8, 2048
  batch = {"tokens": jax.ShapeDtypeStruct((rows, length), np.int32),
           "image_mask": jax.ShapeDtypeStruct((rows, length), bool),
           "loss_mask": jax.ShapeDtypeStruct((rows, length), bool),
           "valid": jax.ShapeDtypeStruct((rows, length), bool),
           "segment_ids": jax.ShapeDtypeStruct((rows, length), np.int32),
           "positions": jax.ShapeDtypeStruct((rows, length), np.int32),
           "source_id": jax.ShapeDtypeStruct((rows, length), np.int32),
           "images": {k: jax.ShapeDtypeStruct((rows, 1, 5, s, s, 3), np.float32)
                      for k, s in cfg.view_sizes.items()}}
  step = train_step.jit_train_step(train_step.make_train_step(cfg, tx, trainable), shardings,
                                   sharding.batch_shardings(batch, mesh), mesh)
  start = time.perf_counter()
  with sharding.use_mesh(mesh):
    compiled = step.lower(abstract, batch).compile()
  memory = compiled.memory_analysis()
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  n_params = sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params))
  print(f"SPHINX-1k 13B train step, fsdp {fsdp}, batch {rows}x{length}: {n_params / 1e9:.1f}B "
        f"params; compiled in {time.perf_counter() - start:.0f}s; per device: arguments "
        f"{memory.argument_size_in_bytes / 2**30:.1f} GiB, temp {memory.temp_size_in_bytes / 2**30:.1f}"
        f" GiB, total {total / 2**30:.1f} GiB")
  assert n_params > 13e9 and total > 0


@pytest.mark.parametrize("name", ["stage1_real", "stage1_synthetic", "stage2", "finetune", "tiny"])
def test_experiment_configs_load_and_override(name):
  exp = config_files.load(name, ["train.steps=7", "workdir=/tmp/x"])
  assert exp.train.steps == 7 and exp.workdir == "/tmp/x"
  model = sphinx_preset(exp.train.model)  # the geometry comes from the model, not the data
  assert (exp.data.view_plan, exp.data.tokens_per_image) == (None, None)
  assert exp.train.view_plan in (None, model.view_plan)
  laid_out = exp.data.for_model(model)
  assert (laid_out.view_plan, laid_out.tokens_per_image) == (model.view_plan, model.image_tokens)
  other = dataclasses.replace(laid_out, tokens_per_image=model.image_tokens + 1)
  with pytest.raises(ValueError, match="leave both unset"):
    other.for_model(model)
  with pytest.raises(ValueError, match="no config field 'stepz'"):
    config_files.load(name, ["train.stepz=7"])


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch,
                                                                     capsys):
  from sphinx_jax.train import loop
  make = train_step.make_train_step

  def poisoned(*args, **kwargs):
    step = make(*args, **kwargs)

    def run(state, batch):
      state, metrics = step(state, batch)
      bad = jax.numpy.where(state.step >= 3, jax.numpy.nan, metrics["loss"])
      return state, {**metrics, "loss": bad}
    return run

  monkeypatch.setattr(loop.train_step, "make_train_step", poisoned)
  from launch.__main__ import main
  assert main(["train", "--config", str(CONFIG), f"--config.workdir={tmp_path}",
               "--config.train.steps=6", "--config.train.checkpoint_every=2"]) == 1
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert re.fullmatch(r"error: step 3: loss nan.*newest verified checkpoint is step 2 in .*", err)
  assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == 2
  assert not list(tmp_path.glob("params_step*"))


def test_launch_data_shows_a_training_configs_data(capsys):
  from launch.__main__ import main
  assert main(["data", "--config", str(CONFIG), "--show", "1"]) == 0
  out = capsys.readouterr().out
  assert "--- sample 0" in out and "skipped records" in out
