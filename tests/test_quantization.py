"""Weight-only int8 / int4 quantization of the LLM (models.quantization): a trained tiny SPHINX
and its 2-layer LLaMA answer as the float model does, the weights shrink as promised with the
towers untouched, a quantized checkpoint from `convert --quantize` loads directly, and a wrong
or broken one is a one-line error naming it."""
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from launch import config_files
from launch.__main__ import main
from sphinx_jax import LanguageModel, Sphinx
from sphinx_jax.checkpoints import params_io
from sphinx_jax.data.records import read_image_file
from sphinx_jax.data.templates import conversation_prompt
from sphinx_jax.models import quantization
from sphinx_jax.train import loop

IMAGES = Path(__file__).resolve().parents[1] / "launch" / "configs" / "data_example" / "images"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
  """The tiny config trained 40 steps (its answers are peaked, as a released model's are)."""
  workdir = tmp_path_factory.mktemp("quant") / "tiny"
  loop.train(config_files.load("tiny", [f"workdir={workdir}", "train.steps=40",
                                        "train.checkpoint_every=100"]))
  return workdir / "params_step40"


@pytest.fixture(scope="module")
def sphinxes(trained) -> dict:
  """The trained model loaded float, int8 and int4."""
  return {scheme: Sphinx.from_pretrained(trained, quantize=scheme)
          for scheme in (None, "int8", "int4", "nf4")}


@pytest.fixture(scope="module")
def int4_conversion(release, tmp_path_factory) -> Path:
  """The tiny release converted with --quantize int4."""
  dst = tmp_path_factory.mktemp("int4") / "int4"
  assert main(["convert", "accessory", "--src", str(release[1]), "--dst", str(dst),
               "--view-plan", "tiny_1k", "--quantize", "int4"]) == 0
  return dst


def _agreement(name: str, ref: np.ndarray, out: np.ndarray) -> float:
  """Top-1 agreement over positions, printed with the max abs logit error and mean KL."""
  log_p = jax.nn.log_softmax(ref)
  kl = float(np.mean(np.sum(np.exp(log_p) * (log_p - jax.nn.log_softmax(out)), -1)))
  top1 = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
  print(f"{name}: top-1 agreement {top1:.3f} over {len(ref)} positions, max |dlogit| "
        f"{np.abs(out - ref).max():.4f}, KL {kl:.2e}")
  return top1


def test_int8_decodes_as_float_and_int4_agrees_on_the_tiny_sphinx(sphinxes):
  model = sphinxes[None]
  pixels = model.preprocess(read_image_file(IMAGES / "red_circle.png"))
  ids = model.tokenizer.encode(conversation_prompt([("What is in the image?", None)]), bos=True)
  greedy = model.generate_ids(pixels, ids, 16, eos_id=None)
  sequence = ids + model.generate_ids(pixels, ids, 64, eos_id=None)
  teacher_forced = slice(len(ids) - 1, len(ids) + 63)  # the 64 positions after the prompt
  reference = model.logits(pixels, sequence)[teacher_forced]
  for scheme in ("int8", "int4", "nf4"):
    quantized = sphinxes[scheme]
    top1 = _agreement(f"SPHINX {scheme}", reference,
                      quantized.logits(pixels, sequence)[teacher_forced])
    if scheme == "int8":
      assert quantized.generate_ids(pixels, ids, 16, eos_id=None) == greedy
    assert top1 >= 0.9


def test_int8_decodes_as_float_and_int4_agrees_on_a_2_layer_llama(trained):
  model = LanguageModel.from_pretrained(trained)
  ids = model.tokenizer.encode(conversation_prompt(
      [("What color do you get by mixing blue and yellow?", None)]), bos=True)
  greedy = model.generate_ids(ids, 16, eos_id=None)
  sequence = ids + model.generate_ids(ids, 64, eos_id=None)
  teacher_forced = slice(len(ids) - 1, len(ids) + 63)
  reference = model.logits(sequence)[teacher_forced]
  assert model.config.n_layers == 2
  for scheme in ("int8", "int4", "nf4"):
    quantized = LanguageModel.from_pretrained(trained, quantize=scheme)
    top1 = _agreement(f"LLaMA {scheme}", reference, quantized.logits(sequence)[teacher_forced])
    if scheme == "int8":
      assert quantized.generate_ids(ids, 16, eos_id=None) == greedy
    assert top1 >= 0.9


def test_the_llm_shrinks_the_towers_do_not_and_loading_streams_the_same_weights(sphinxes):
  params = sphinxes[None].params["params"]
  matmuls = lambda llm: {"layers": llm["layers"], "output": llm["output"]}  # noqa: E731
  float_bytes = quantization.nbytes(matmuls(params["llm"]))
  for scheme, bound in (("int8", 0.27), ("int4", 0.16), ("nf4", 0.16)):
    loaded = sphinxes[scheme].params["params"]
    in_memory = quantization.quantize_llm(params["llm"], scheme)  # the same, all at once
    for a, b in zip(jax.tree.leaves(loaded["llm"]), jax.tree.leaves(in_memory)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ratio = quantization.nbytes(matmuls(loaded["llm"])) / float_bytes
    whole = quantization.nbytes(loaded["llm"]) / quantization.nbytes(params["llm"])
    print(f"{scheme}: LLM matmul weights {ratio:.3f}x of fp32 (scales included); the tiny LLM "
          f"with its float embeddings and norms {whole:.3f}x")
    assert ratio <= bound
    towers = {k: v for k, v in loaded.items() if k != "llm"}
    for a, b in zip(jax.tree.leaves(towers), jax.tree.leaves({k: params[k] for k in towers})):
      assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def test_a_quantized_conversion_loads_directly_and_refuses_another_scheme(release, int4_conversion,
                                                                          capsys):
  dst = int4_conversion
  assert json.loads((dst / "config.json").read_text())["quantization"] == "int4"
  direct = Sphinx.from_pretrained(dst)
  at_load = Sphinx.from_pretrained(release[2], quantize="int4")
  assert quantization.scheme_of(direct.params) == "int4"
  for a, b in zip(jax.tree.leaves(direct.params), jax.tree.leaves(at_load.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  with pytest.raises(params_io.CheckpointError, match=f"{dst}: holds int4 weights, not int8"):
    Sphinx.from_pretrained(dst, quantize="int8")
  assert main(["chat", "--checkpoint", str(dst), "--quantize", "int8", "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and str(dst) in err and "int4" in err, err


def test_an_nf4_conversion_stores_its_codes_and_loads_them_back(release, tmp_path):
  dst = tmp_path / "nf4"
  assert main(["convert", "accessory", "--src", str(release[1]), "--dst", str(dst),
               "--view-plan", "tiny_1k", "--quantize", "nf4"]) == 0
  direct = Sphinx.from_pretrained(dst)  # uint4 codes stored as uint8, cast back
  at_load = Sphinx.from_pretrained(release[2], quantize="nf4")
  assert quantization.scheme_of(direct.params) == "nf4"
  for a, b in zip(jax.tree.leaves(direct.params), jax.tree.leaves(at_load.params)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_truncated_quantized_checkpoint_is_a_one_line_error_naming_it(int4_conversion,
                                                                       tmp_path, capsys):
  broken = tmp_path / "broken"
  shutil.copytree(int4_conversion, broken)
  largest = max((f for f in (broken / "params").rglob("*") if f.is_file()),
                key=lambda f: f.stat().st_size)
  largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
  assert main(["chat", "--checkpoint", str(broken), "--prompt", "hi"]) == 1
  err = capsys.readouterr().err
  print(err)
  assert err.count("\n") == 1 and str(broken) in err, err
