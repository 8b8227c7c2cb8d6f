"""`launch export hf`: the LLM of a params checkpoint as an HF Llama directory that
transformers' LlamaForCausalLM loads with our logits, and that `convert hf` reads back bit for
bit; a SPHINX checkpoint exports its LLM."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from launch.__main__ import main
from sphinx_jax import LanguageModel
from sphinx_jax.checkpoints import hf_export, params_io
from tests import llama_refs


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A 2-layer GQA LLaMA (HF) converted to our checkpoint, with a tokenizer."""
  root = tmp_path_factory.mktemp("export")
  src = llama_refs.write_hf(llama_refs.hf_llama(kv_heads=2, seed=7), root / "hf")
  (src / "tokenizer.model").write_bytes(llama_refs.train_tokenizer(root).read_bytes())
  assert main(["convert", "hf", "--src", str(src), "--dst", str(root / "ckpt")]) == 0
  return root / "ckpt"


def _stored(ckpt) -> dict:
  shapes = params_io.stored_shapes(ckpt)
  return params_io.read_leaves(ckpt, shapes)


def _hf_logits(directory, ids) -> np.ndarray:
  model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.tensor([ids])).logits[0].numpy()


def test_export_loads_in_transformers_and_converts_back_bit_for_bit(tmp_path, converted):
  assert main(["export", "hf", "--checkpoint", str(converted), "--dst", str(tmp_path / "hf")]) == 0
  ids = [1] + np.random.default_rng(0).integers(3, 256, 24).tolist()
  ours = LanguageModel.from_pretrained(converted).logits(ids)
  diff = np.abs(_hf_logits(tmp_path / "hf", ids) - ours).max()
  print(f"export hf: max |HF logits - ours| {diff:.2e}")
  assert diff < 1e-4
  tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
  ours_tok = LanguageModel.from_pretrained(converted).tokenizer
  assert tok("the red circle").input_ids == ours_tok.encode("the red circle")

  assert main(["convert", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "back")]) == 0
  before, after = _stored(converted), _stored(tmp_path / "back")
  assert before.keys() == after.keys()
  for key in before:
    assert before[key].dtype == after[key].dtype and np.array_equal(before[key], after[key]), key


def test_bf16_checkpoints_export_in_bf16_and_shard(tmp_path, converted, monkeypatch):
  assert main(["convert", "hf", "--src", str(converted.parent / "hf"), "--dst",
               str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
  monkeypatch.setattr(hf_export, "SHARD_BYTES", 40_000)  # several shards and an index
  assert main(["export", "hf", "--checkpoint", str(tmp_path / "bf16"), "--dst",
               str(tmp_path / "hf")]) == 0
  index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 2
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  assert main(["convert", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "back")]) == 0
  before, after = _stored(tmp_path / "bf16"), _stored(tmp_path / "back")
  assert all(np.array_equal(before[k], after[k]) and after[k].dtype.name == "bfloat16"
             for k in before)


def test_a_sphinx_checkpoint_exports_its_llm(tmp_path, release):
  _, _, ckpt = release
  assert main(["export", "hf", "--checkpoint", str(ckpt), "--dst", str(tmp_path / "hf")]) == 0
  ids = [1, 17, 99, 23, 5]
  ours = LanguageModel.from_pretrained(ckpt).logits(ids)
  assert np.abs(_hf_logits(tmp_path / "hf", ids) - ours).max() < 1e-4


def test_export_refuses_an_existing_destination_and_a_non_checkpoint(tmp_path, converted, capsys):
  (tmp_path / "taken").mkdir()
  assert main(["export", "hf", "--checkpoint", str(converted), "--dst", str(tmp_path / "taken")]) == 1
  assert "already exists" in capsys.readouterr().err
  assert main(["export", "hf", "--checkpoint", str(tmp_path), "--dst", str(tmp_path / "x")]) == 1
  assert "config.json" in capsys.readouterr().err and not (tmp_path / "x").exists()
