"""The package as users install it: a wheel built from the tree carries the shipped configs and
their fixture, and the command line works from a directory outside the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
  """The wheel's files, unpacked: what `pip install .` puts in site-packages (built from a copy,
  so the build leaves nothing in the checkout)."""
  out = tmp_path_factory.mktemp("wheel")
  source = out / "source"
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      ".git", "runs", "build", "*.egg-info", "__pycache__", "eval_results"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(out), str(source)], check=True, capture_output=True)
  site = out / "site"
  with zipfile.ZipFile(next(out.glob("sphinx_jax-*.whl"))) as wheel:
    wheel.extractall(site)
  return site


def _launch(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(site)}
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


def test_the_wheel_ships_the_configs_and_their_fixture(installed):
  configs = installed / "launch" / "configs"
  assert {p.stem for p in configs.glob("*.py")} >= {"default", "tiny", "data_example"}
  assert (configs / "data_example" / "tokenizer.model").is_file()
  assert len(list((configs / "data_example" / "images").glob("*.png"))) == 3


def test_commands_run_outside_the_repo_from_the_installed_files(installed, tmp_path):
  where = _launch(installed, tmp_path, "-c", "import launch, sphinx_jax; "
                  "print(launch.__file__); print(sphinx_jax.__file__)")
  assert all(line.startswith(str(installed)) for line in where.stdout.split()), where
  shown = _launch(installed, tmp_path, "-m", "launch", "train", "--help")
  assert shown.returncode == 0, shown.stderr
  assert "Shipped: data_example, default, finetune" in " ".join(shown.stdout.split())
  data = _launch(installed, tmp_path, "-m", "launch", "data", "--config", "data_example",
                 "--show", "1")
  assert data.returncode == 0, data.stderr
  assert "--- sample 0:" in data.stdout and "⟦" in data.stdout


def test_help_imports_no_jax(installed, tmp_path):
  probe = ("import sys, runpy; sys.argv = ['launch', '--help']\n"
           "try: runpy.run_module('launch', run_name='__main__')\n"
           "except SystemExit: pass\n"
           "print('jax' in sys.modules)")
  result = _launch(installed, tmp_path, "-c", probe)
  assert result.stdout.split()[-1] == "False", result
