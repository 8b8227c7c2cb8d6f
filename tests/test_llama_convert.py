"""`launch convert meta|hf`: round trips through each format, and clear failures."""
import json

import numpy as np
import pytest

from launch.__main__ import main
from sphinx_jax import LanguageModel
from sphinx_jax.checkpoints import params_io
from tests import llama_refs


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return llama_refs.train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def gqa_model():
  return llama_refs.hf_llama(kv_heads=2, seed=5)


def _check_logits(model, ckpt):
  lm = LanguageModel.from_pretrained(ckpt)
  ids = [1] + np.random.default_rng(3).integers(3, 256, 20).tolist()
  diff = np.abs(lm.logits(ids) - llama_refs.hf_logits(model, ids)).max()
  print(f"{ckpt.name}: max |logits - HF| {diff:.2e}")
  assert diff < 1e-4
  return lm


def test_meta_round_trip(tmp_path, gqa_model, tokenizer):
  src = llama_refs.write_meta(gqa_model, tmp_path / "meta", n_shards=2, tokenizer=tokenizer)
  assert main(["convert", "meta", "--src", str(src), "--dst", str(tmp_path / "ckpt")]) == 0
  lm = _check_logits(gqa_model, tmp_path / "ckpt")
  assert lm.config.kv_heads == 2 and lm.config.hidden_dim == 192
  assert lm.tokenizer.encode("the red circle")[0] == 1
  assert lm.tokenizer.decode(lm.tokenizer.encode("the red circle")) == "the red circle"


def test_hf_round_trip(tmp_path, gqa_model, tokenizer):
  src = llama_refs.write_hf(gqa_model, tmp_path / "hf")
  (src / "tokenizer.model").write_bytes(tokenizer.read_bytes())
  assert main(["convert", "hf", "--src", str(src), "--dst", str(tmp_path / "ckpt")]) == 0
  _check_logits(gqa_model, tmp_path / "ckpt")


def test_bf16_storage_round_trip(tmp_path, gqa_model):
  src = llama_refs.write_hf(gqa_model, tmp_path / "hf")
  dst = tmp_path / "ckpt"
  assert main(["convert", "hf", "--src", str(src), "--dst", str(dst), "--dtype", "bfloat16"]) == 0
  stored = params_io.stored_shapes(dst)
  assert {str(dtype) for _, dtype in stored.values()} == {"bfloat16"}
  assert stored["llm/layers/1/attention/wk"][0] == (64, 2, 16)
  lm = LanguageModel.from_pretrained(dst, dtype="float32")
  ids = [1, 5, 9, 200]
  diff = np.abs(lm.logits(ids) - llama_refs.hf_logits(gqa_model, ids)).max()
  assert diff < 0.1  # bf16 weights: close, not exact


def _no_output(tmp_path, name):
  leftovers = [p.name for p in tmp_path.iterdir() if name in p.name]
  assert leftovers == [], leftovers


def test_truncated_pth_fails_naming_the_file(tmp_path, gqa_model, capsys):
  src = llama_refs.write_meta(gqa_model, tmp_path / "meta", n_shards=2)
  shard = src / "consolidated.01.pth"
  shard.write_bytes(shard.read_bytes()[:2000])
  assert main(["convert", "meta", "--src", str(src), "--dst", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "consolidated.01.pth" in err and err.count("\n") == 1
  _no_output(tmp_path, "out")


def test_params_json_disagreeing_with_weights_fails_naming_the_key(tmp_path, gqa_model, capsys):
  src = llama_refs.write_meta(gqa_model, tmp_path / "meta", n_shards=2)
  params = json.loads((src / "params.json").read_text())
  (src / "params.json").write_text(json.dumps({**params, "ffn_dim_multiplier": 1.5}))
  assert main(["convert", "meta", "--src", str(src), "--dst", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  print(err)
  assert "'layers.0.feed_forward.w1.weight' has shape (192, 64)" in err
  assert "consolidated.00.pth" in err and "params.json implies (256, 64)" in err
  _no_output(tmp_path, "out")


def test_failure_midway_leaves_no_partial_output(tmp_path, gqa_model, capsys):
  src = llama_refs.write_meta(gqa_model, tmp_path / "meta", n_shards=1)
  params = json.loads((src / "params.json").read_text())
  (src / "params.json").write_text(json.dumps({**params, "n_layers": 3}))
  assert main(["convert", "meta", "--src", str(src), "--dst", str(tmp_path / "out")]) == 1
  assert "missing key 'layers.2." in capsys.readouterr().err
  _no_output(tmp_path, "out")


def test_missing_config_is_a_clear_error(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(params_io.CheckpointError, match="config.json: missing"):
    LanguageModel.from_pretrained(tmp_path / "empty")
