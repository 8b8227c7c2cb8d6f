"""`launch mix`: exact leaf-wise mixing, refusals that name the key, atomic output, sweeps."""
import functools
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import linen as nn

from launch.__main__ import main
from sphinx_jax.checkpoints import mix as mix_lib
from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.params_io import CheckpointError
from sphinx_jax.configs import sphinx_preset
from sphinx_jax.models.sphinx import init_params


def _params(seed: int) -> dict:
  return jax.tree.map(lambda x: x, _init(seed))  # fresh dicts: callers replace leaves


@functools.cache
def _init(seed: int) -> dict:
  params = nn.unbox(init_params(sphinx_preset("tiny"), jax.random.key(seed)))["params"]
  # Distinct norms too (they initialise to ones), and one bfloat16 leaf to check dtypes are kept.
  params = jax.tree.map(lambda x: np.asarray(x) + seed * np.float32(0.25), params)
  params["llm"]["norm"]["scale"] = params["llm"]["norm"]["scale"].astype(jax.numpy.bfloat16)
  return params


def _write(dst, params, **config_overrides):
  config = {"model": "sphinx", **sphinx_preset("tiny").to_dict(), **config_overrides}
  return params_io.write(dst, params_io.disk_parts(params), config, None)


def _read(src) -> dict:
  """{key: array} of a checkpoint, in disk layout."""
  return params_io.read_leaves(src, params_io.stored_shapes(src))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  root = tmp_path_factory.mktemp("mix")
  return _write(root / "a", _params(1)), _write(root / "b", _params(2))


def _expected(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
  return (beta * a.astype(np.float32) + (1 - beta) * b.astype(np.float32)).astype(a.dtype)


def _leftovers(root) -> list:
  return sorted(p.name for p in root.iterdir() if p.name not in ("a", "b"))


def test_every_leaf_is_the_exact_mix(pair, tmp_path):
  a, b = pair
  assert main(["mix", "--a", str(a), "--b", str(b), "--beta", "0.3", "--out",
               str(tmp_path / "m")]) == 0
  xs, ys, mixed = _read(a), _read(b), _read(tmp_path / "m")
  assert mixed.keys() == xs.keys()
  for key, x in xs.items():
    assert mixed[key].dtype == x.dtype, key
    np.testing.assert_array_equal(mixed[key], _expected(x, ys[key], 0.3), err_msg=key)
  assert mixed["llm/norm/scale"].dtype == jax.numpy.bfloat16
  assert params_io.read_config(tmp_path / "m") == params_io.read_config(a)


def test_only_llm_copies_the_rest_from_a(pair, tmp_path):
  a, b = pair
  mix_lib.mix(a, b, 0.5, tmp_path / "m", only="llm")
  xs, ys, mixed = _read(a), _read(b), _read(tmp_path / "m")
  assert any(not k.startswith("llm/") for k in xs)
  for key, x in xs.items():
    want = _expected(x, ys[key], 0.5) if key.startswith("llm/") else x
    np.testing.assert_array_equal(mixed[key], want, err_msg=key)
  with pytest.raises(CheckpointError, match="'nope'"):
    mix_lib.mix(a, b, 0.5, tmp_path / "n", only="nope")


def test_sweep_writes_one_checkpoint_per_beta(pair, tmp_path):
  a, b = pair
  out = tmp_path / "sweep"
  assert main(["mix", "--a", str(a), "--b", str(b), "--beta", "0.3", "0.5", "0.7", "--out",
               str(out)]) == 0
  assert sorted(p.name for p in out.iterdir()) == ["beta_0.3", "beta_0.5", "beta_0.7"]
  xs, ys = _read(a), _read(b)
  for beta in (0.3, 0.5, 0.7):
    mixed = _read(out / f"beta_{beta}")
    for key, x in xs.items():
      np.testing.assert_array_equal(mixed[key], _expected(x, ys[key], beta), err_msg=key)


def _mismatch(kind: str):
  params = _params(2)
  if kind == "tree":
    params["llm"]["extra"] = {"kernel": np.zeros((2,), np.float32)}
    return params, {}, "llm/extra/kernel"
  if kind == "shape":
    params["llm"]["output"]["kernel"] = params["llm"]["output"]["kernel"][:, :-1]
    return params, {}, "llm/output/kernel"
  if kind == "dtype":
    wq = params["llm"]["layers"]["attention"]["wq"]
    params["llm"]["layers"]["attention"]["wq"] = wq.astype(np.float16)
    return params, {}, "llm/layers/0/attention/wq"
  return params, {"n_views": 7}, "n_views"


@pytest.mark.parametrize("kind", ["tree", "shape", "dtype", "config"])
def test_mismatch_is_refused_naming_the_key(pair, tmp_path, kind, capsys):
  a, _ = pair
  params, config, key = _mismatch(kind)
  b = _write(tmp_path / "b", params, **config)
  assert main(["mix", "--a", str(a), "--b", str(b), "--beta", "0.5", "--out",
               str(tmp_path / "m")]) == 1
  assert f"'{key}'" in capsys.readouterr().err
  assert _leftovers(tmp_path) == []


def test_config_dtype_may_differ(pair, tmp_path):
  a, _ = pair
  b = _write(tmp_path / "b", _params(2), dtype="bfloat16")
  mix_lib.mix(a, b, 0.5, tmp_path / "m")
  assert (tmp_path / "m" / "config.json").is_file()


@pytest.mark.parametrize("betas", [0.5, [0.3, 0.7]])
def test_interruption_leaves_nothing(pair, tmp_path, monkeypatch, betas):
  a, b = pair
  monkeypatch.setattr(mix_lib, "GROUP_BYTES", 1 << 20)  # several parts, to stop between two
  groups = len(list(mix_lib._groups(params_io.stored_shapes(a))))
  assert groups > 2
  stop = groups * (len(betas) - 1 if isinstance(betas, list) else 0) + 2  # into the last one
  read, calls = params_io.read_leaves, []

  def interrupted(src, group):
    calls.append(src)
    if src == b and calls.count(b) == stop:
      raise KeyboardInterrupt
    return read(src, group)

  monkeypatch.setattr(params_io, "read_leaves", interrupted)
  with pytest.raises(KeyboardInterrupt):
    mix_lib.mix(a, b, betas, tmp_path / "m")
  assert _leftovers(tmp_path) == []


def test_existing_output_is_refused(pair, tmp_path):
  a, b = pair
  (tmp_path / "m").mkdir()
  with pytest.raises(CheckpointError, match="already exists"):
    mix_lib.mix(a, b, [0.3, 0.7], tmp_path / "m")
  assert json.dumps(_leftovers(tmp_path)) == '["m"]'


def test_relative_paths(pair, tmp_path, monkeypatch):
  """Orbax wants absolute paths; the commands take whatever the user typed."""
  a, b = pair
  monkeypatch.chdir(a.parent)
  out = mix_lib.mix(a.name, b.name, 0.5, Path(os.path.relpath(tmp_path / "m", a.parent)))
  mixed, x, y = _read(tmp_path / "m"), _read(a), _read(b)
  for key in x:
    np.testing.assert_array_equal(mixed[key], _expected(x[key], y[key], 0.5), key)
  assert out == tmp_path / "m"


@pytest.mark.parametrize("beta", ["nan", "inf"])
def test_a_non_finite_beta_is_refused_even_when_extrapolating(pair, tmp_path, capsys, beta):
  a, b = pair
  assert main(["mix", "--a", str(a), "--b", str(b), "--beta", "0.5", beta, "--out",
               str(tmp_path / "m"), "--extrapolate"]) == 1
  err = capsys.readouterr().err
  assert f"beta {beta}: not a finite number" in err and err.count("\n") == 1
  with pytest.raises(ValueError, match="beta -inf: not a finite number"):
    mix_lib.mix(a, b, -np.inf, tmp_path / "m", extrapolate=True)
  assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("beta", [-0.5, 1.5])
def test_a_beta_outside_0_1_needs_extrapolate(pair, tmp_path, capsys, beta):
  a, b = pair
  args = ["mix", "--a", str(a), "--b", str(b), "--beta", str(beta), "--out", str(tmp_path / "m")]
  assert main(args) == 1
  err = capsys.readouterr().err
  assert f"beta {beta:g} is outside [0, 1]" in err and "--extrapolate" in err
  assert err.count("\n") == 1 and _leftovers(tmp_path) == []
  assert main(args + ["--extrapolate"]) == 0
  xs, ys, mixed = _read(a), _read(b), _read(tmp_path / "m")
  for key, x in xs.items():
    np.testing.assert_array_equal(mixed[key], _expected(x, ys[key], beta), err_msg=key)


def test_a_corrupt_parent_is_refused_naming_it_and_nothing_is_written(pair, tmp_path, capsys):
  import shutil
  from sphinx_jax.checkpoints import checksums
  a, b = pair
  corrupt = shutil.copytree(b, tmp_path / "b")
  sums = json.loads((corrupt / params_io.CHECKSUMS_FILE).read_text())
  key = sorted(sums["arrays"])[0]
  sums["arrays"][key] = "0" * 16  # as if that array's bytes had changed on disk
  (corrupt / params_io.CHECKSUMS_FILE).write_text(json.dumps(sums))
  with pytest.raises(checksums.ChecksumError, match=rf"{corrupt}: array '{key}' fails"):
    mix_lib.mix(a, corrupt, 0.5, tmp_path / "m")
  assert not (tmp_path / "m").exists()
