"""Two processes (gloo, 4 CPU devices each) train like one process with 8 devices: the same
losses, each process decoding only its half of every batch; killed with SIGKILL after a
checkpoint, they resume to the same losses, and they write the params export together."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from launch.__main__ import main
from sphinx_jax import Sphinx

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8  # the kill lands after the step-4 checkpoint, before the end


def _args(workdir: Path) -> list[str]:
  """The tiny run on a (data 2, fsdp 2, tensor 2) mesh: with two processes the batch, the
  parameters and the tensor-parallel matmuls all cross the process boundary."""
  return ["train", "--config", "tiny", f"--config.workdir={workdir}",
          f"--config.train.steps={STEPS}", "--config.train.checkpoint_every=4",
          "--config.train.mesh.data=2", "--config.train.mesh.fsdp=2",
          "--config.train.mesh.tensor=2"]


def _pair(workdir: Path, *extra: str):
  """Two `launch train` processes of 4 CPU devices each."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  procs = []
  for i in range(2):
    log = workdir.parent / f"{workdir.name}.{i}.log"
    cmd = [sys.executable, "-m", "launch", *_args(workdir), *extra, "--coordinator",
           f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)]
    procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "a"),
                                   stderr=subprocess.STDOUT), log))
  return procs


def _losses(workdir: Path) -> dict[int, float]:
  """step -> loss, the last line written for each step (a resumed run rewrites some)."""
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return {m["step"]: m["loss"] for m in map(json.loads, lines)}


def _rows(spans: str) -> list[int]:
  """'0-1,4-5' -> [0, 1, 4, 5]."""
  out = []
  for span in spans.split(","):
    a, _, b = span.partition("-")
    out += range(int(a), int(b or a) + 1)
  return out


def _wait(procs, timeout: float = 600):
  for proc, log in procs:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives")
def test_two_processes_train_resume_and_export_like_one(tmp_path):
  one = tmp_path / "one"
  assert main(_args(one)) == 0  # this process: one process, 8 devices (conftest)
  reference = _losses(one)
  assert sorted(reference) == list(range(1, STEPS + 1))

  two = tmp_path / "two"
  procs = _pair(two)
  deadline = time.time() + 600
  while not (two / "checkpoints" / "4").is_dir():  # Orbax renames a finished step into place
    assert time.time() < deadline and all(p.poll() is None for p, _ in procs), \
        procs[0][1].read_text()[-3000:]
    time.sleep(0.2)
  for proc, _ in procs:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  killed_at = max(_losses(two))
  assert killed_at < STEPS, "the run finished before it could be killed"

  procs = _pair(two, "--resume")
  _wait(procs)
  losses = _losses(two)
  assert sorted(losses) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([losses[s] for s in reference], list(reference.values()),
                             rtol=0, atol=1e-6)
  read = [re.search(r"data: process \d read rows ([\d,-]+) of each 8-row batch: (\d+) records "
                    r"decoded for (\d+) batches", log.read_text()).groups() for _, log in procs]
  rows = [_rows(spans) for spans, _, _ in read]
  assert sorted(rows[0] + rows[1]) == list(range(8)) and len(rows[0]) == 4  # half each
  assert [int(decoded) for _, decoded, _ in read] == [4 * int(n) for _, _, n in read]
  exported = Sphinx.from_pretrained(two / f"params_step{STEPS}")
  alone = Sphinx.from_pretrained(one / f"params_step{STEPS}")
  for a, b in zip(jax.tree.leaves(exported.params), jax.tree.leaves(alone.params)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-6)
