"""Checkpoints never load corrupt: per-array checksums on params and training checkpoints, a
resume that falls back to the newest good step, checks its config and holds the workdir."""
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sphinx_jax import sharding
from sphinx_jax.checkpoints import checksums, params_io
from sphinx_jax.train import optimizer, state_checkpoints, workdir_lock
from sphinx_jax.train import step as train_step
from sphinx_jax.train.loop import model_config, train
from tests.test_train import CONFIG, ROOT, _experiment, _losses

def _data_files(directory: Path) -> list[Path]:
  """The files holding array bytes (OCDBT's `d/` files), largest first."""
  return sorted((p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"),
                key=lambda p: -p.stat().st_size)


def _flip(path: Path, positions: list[int]) -> None:
  data = bytearray(path.read_bytes())
  for i in positions:
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def test_checksums_are_the_same_under_any_sharding_and_see_one_flipped_bit():
  x = np.random.RandomState(0).randn(16, 24).astype(np.float32)
  mesh = jax.make_mesh((4, 2), ("a", "b"))
  sharded = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
  assert checksums.checksum(sharded, "device") == checksums.checksum(x) == checksums.checksum(
      sharded)  # on the devices, sharded; by numpy on the host
  rng = np.random.RandomState(1)
  ints = rng.randint(-8, 8, (8, 6))
  tree = {"bf16": x.astype(jnp.bfloat16), "f16": x.astype(np.float16), "i8": ints.astype(np.int8),
          "bool": x > 0, "i64": ints * 10**6, "int4": jnp.asarray(ints, jnp.int4),
          "uint4": jnp.asarray(ints + 8, jnp.uint4), "key": jax.random.key(3),
          "chunks": rng.randn(5 << 20).astype(np.float32)}  # more than one host chunk
  assert checksums.of_tree(tree, "host") == checksums.of_tree(tree, "device")
  for dtype in (np.float32, jnp.bfloat16, np.int8, np.int32):
    y = np.asarray(x, dtype)
    for flat_index in (0, 7, y.size - 1):
      z = y.copy()
      z.view(np.uint8).reshape(-1)[flat_index * z.itemsize] ^= 1
      assert checksums.checksum(z) != checksums.checksum(y), (dtype, flat_index)


def _params():
  rng = np.random.RandomState(0)
  return {"embed": rng.randn(256, 64).astype(np.float32),
          "blocks": {"layers": {"w": rng.randn(3, 32, 32).astype(np.float32),
                                "b": rng.randn(3, 32).astype(jnp.bfloat16)}}}


def _abstract(params, dtype=None):
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=one),
                      params)


def test_flipped_bytes_in_any_file_of_a_params_checkpoint_never_load_silently(tmp_path):
  params = _params()
  clean = params_io.write(tmp_path / "clean", params_io.disk_parts(params), {"model": "test"})
  restored = params_io.load(clean, _abstract(params))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored),
                                                   jax.tree.leaves(params)))
  files = [p.relative_to(clean) for p in _data_files(clean / params_io.PARAMS_DIR)]
  rng = random.Random(0)
  outcomes = []
  for trial, name in enumerate(files[:2] + rng.sample(files[2:], 10)):
    ckpt = tmp_path / f"flipped{trial}"
    shutil.copytree(clean, ckpt)
    _flip(ckpt / name, rng.sample(range((ckpt / name).stat().st_size), 4))
    try:
      loaded = params_io.load(ckpt, _abstract(params))
    except checksums.ChecksumError as e:
      assert str(ckpt) in str(e) and "fails its checksum" in str(e)
      outcomes.append("checksum")
    except Exception as e:  # noqa: BLE001 - the storage layer refused it itself: not loaded either
      outcomes.append(type(e).__name__)
    else:  # the flips hit bytes no array reads (an index node the restore does not visit)
      assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded),
                                                       jax.tree.leaves(params)))
      outcomes.append("unread")
  print("4 bytes flipped in a file, largest files first:", outcomes)
  assert outcomes[:2] == ["checksum", "checksum"]  # the two largest hold the embedding's bytes


def test_a_params_checkpoint_loads_cast_and_verified_and_names_the_corrupt_array(tmp_path):
  params = _params()
  ckpt = params_io.write(tmp_path / "p", params_io.disk_parts(params), {"model": "test"})
  as_f32 = params_io.load(ckpt, _abstract(params, jnp.float32))
  assert as_f32["blocks"]["layers"]["b"].dtype == jnp.float32
  np.testing.assert_array_equal(as_f32["blocks"]["layers"]["b"],
                                np.asarray(params["blocks"]["layers"]["b"], np.float32))
  sums = json.loads((ckpt / params_io.CHECKSUMS_FILE).read_text())
  sums["arrays"]["blocks/layers/1/w"] = "0" * 16
  (ckpt / params_io.CHECKSUMS_FILE).write_text(json.dumps(sums))
  params_io.load(ckpt, {"embed": _abstract(params)["embed"]})  # a subtree: only it is checked
  with pytest.raises(checksums.ChecksumError, match=r"'blocks/layers/1/w' fails its checksum"):
    params_io.load(ckpt, _abstract(params))


def test_a_non_object_config_json_is_a_one_line_error(tmp_path):
  (tmp_path / "config.json").write_text("[1, 2]")
  with pytest.raises(params_io.CheckpointError, match="expected a JSON object, got list"):
    params_io.read_config(tmp_path)


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A tiny run of 4 steps with checkpoints at 2 and 4: (workdir, experiment)."""
  workdir = tmp_path_factory.mktemp("four")
  exp = _experiment(workdir, "train.steps=4", "train.checkpoint_every=2",
                    "train.keep_checkpoints=3")
  train(exp)
  return workdir, exp


def _copy_run(src: Path, dst: Path) -> Path:
  shutil.copytree(src, dst)
  return dst


def test_a_corrupt_training_checkpoint_is_refused_and_resume_takes_the_previous(
    four_steps, tmp_path, caplog):
  workdir, exp = four_steps
  run = _copy_run(workdir, tmp_path / "run")
  state_dir = run / "checkpoints" / "4" / "state"
  target = _data_files(state_dir)[0]
  _flip(target, list(range(100, target.stat().st_size - 100, max(1, target.stat().st_size // 64))))
  cfg = model_config(exp.train)
  tx = optimizer.make(exp.train.optim, exp.train.steps)
  mesh = sharding.make_mesh(exp.train.mesh)
  abstract, _ = train_step.abstract_state(cfg, tx, exp.train.trainable, mesh)
  ckpts = state_checkpoints.Checkpoints(run / "checkpoints", 2, 3)
  with pytest.raises(Exception, match=r"checkpoints/4|fails its checksum"):
    ckpts.restore(abstract, 4)
  with caplog.at_level(logging.WARNING):
    state, _ = ckpts.restore_newest(abstract)
  ckpts.close()
  assert int(state.step) == 2
  assert "checkpoint step 4 does not restore" in caplog.text
  assert not (run / "checkpoints" / "4").exists()
  assert len(list((run / state_checkpoints.CORRUPT_DIR).iterdir())) == 1


def test_resume_refuses_a_changed_config_unless_the_change_is_named(four_steps, tmp_path):
  workdir, _ = four_steps
  run = _copy_run(workdir, tmp_path / "run")
  saved = json.loads((run / "run_config.json").read_text())
  assert saved["train"]["steps"] == 4 and saved["data"]["batch_size"] == 8
  base = ["train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=3"]
  with pytest.raises(ValueError, match=r"holds checkpoints up to step 4; pass --resume"):
    train(_experiment(run, *base))
  for change, field in (("data.batch_size=4", "data.batch_size"), ("train.optim.lr=0.1",
                                                                  "train.optim.lr"),
                        ("train.compute_dtype='bfloat16'", "train.compute_dtype"),
                        ("data.seq_len=128", "data.seq_len"), ("train.steps=6", "train.steps")):
    with pytest.raises(ValueError, match=rf"changes what the run computes: {field}"):
      train(_experiment(run, *base, change), resume=True)
  assert train(_experiment(run, *base, "train.log_every=1"), resume=True) == {}  # watched only
  assert train(_experiment(run, *base, "data.batch_size=4"), resume=True,
               resume_with_changes=("data",)) == {}
  assert json.loads((run / "run_config.json").read_text())["data"]["batch_size"] == 4


def test_a_second_run_in_a_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path, caplog):
  with workdir_lock.locked(tmp_path):
    holder = json.loads((tmp_path / workdir_lock.FILE).read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(workdir_lock.WorkdirLocked, match=rf"pid {os.getpid()} on "):
      workdir_lock.acquire(tmp_path)
    with pytest.raises(workdir_lock.WorkdirLocked, match="in use by another run"):
      train(_experiment(tmp_path, "train.steps=1"))
  assert not (tmp_path / workdir_lock.FILE).exists()
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / workdir_lock.FILE).write_text(json.dumps(
      {"pid": dead.pid, "host": os.uname().nodename, "started": "earlier"}))
  with caplog.at_level(logging.WARNING):
    with workdir_lock.locked(tmp_path):
      assert json.loads((tmp_path / workdir_lock.FILE).read_text())["pid"] == os.getpid()
  assert f"pid {dead.pid} no longer runs" in caplog.text


def _launch(workdir, *extra) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, "-m", "launch", "train", "--config", str(CONFIG),
       f"--config.workdir={workdir}", "--config.train.steps=12",
       "--config.train.checkpoint_every=4", "--config.train.keep_checkpoints=5", *extra],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def test_kill_9_then_a_truncated_latest_checkpoint_resumes_from_the_previous_exactly(tmp_path):
  reference = tmp_path / "uninterrupted"
  assert _launch(reference).wait() == 0
  run = tmp_path / "killed"
  proc = _launch(run)
  deadline = time.time() + 600
  while not (run / "checkpoints" / "8").is_dir():  # the step-8 save has begun or finished
    assert proc.poll() is None and time.time() < deadline, "run ended before step 8"
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  newest = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  for f in _data_files(run / "checkpoints" / str(newest) / "state")[:1]:
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])  # a torn write
  resumed = _launch(run, "--resume")
  err = resumed.stderr.read().decode()
  assert resumed.wait() == 0, err[-2000:]
  assert f"checkpoint step {newest} does not restore" in err
  want, got = _losses(reference), _losses(run)
  previous = newest - 4
  print(f"killed at step {newest}'s save; resumed from {previous}:",
        [(s, want[s], got[s]) for s in (previous + 1, 12)])
  assert [got[s] for s in range(previous + 1, 13)] == [want[s] for s in range(previous + 1, 13)]


def test_an_unwritable_workdir_is_a_one_line_error(tmp_path, capsys):
  from launch.__main__ import main
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert main(["train", "--config", str(CONFIG), f"--config.workdir={blocker}/run"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: ") and str(blocker) in err[-1]
