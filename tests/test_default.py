"""The embedded default end to end, in its `fast` variant (3 steps a stage, a 32-scene world):
`python -m launch train` with the config argument, then the files and the table it produces."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main
from sphinx_jax.checkpoints import mix as mix_lib
from sphinx_jax.checkpoints import params_io
from sphinx_jax.train import config as train_config
from sphinx_jax import recipe

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, what the command printed) of one fast default run."""
  import contextlib
  import io
  workdir = tmp_path_factory.mktemp("default") / "run"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(["train", "--config", f"{CONFIG}:fast,workdir={workdir}"]) == 0
  return workdir, out.getvalue()


def test_writes_every_stage_the_mix_the_plot_and_the_chat(run):
  workdir, _ = run
  for stage in ("stage1_real", "stage1_synthetic", "stage2"):
    assert (workdir / stage / "params_step3" / "config.json").is_file(), stage
    assert len((workdir / stage / "metrics.jsonl").read_text().splitlines()) == 3
  assert (workdir / "world" / "eval" / "vqa.jsonl").is_file()
  for png in ("loss.png", "chat.png"):
    with Image.open(workdir / png) as image:
      assert image.format == "PNG" and min(image.size) > 100
  for name in ("vqa", "rec", "ocr"):
    assert len((workdir / "eval" / name / "predictions.jsonl").read_text().splitlines()) <= 8


def test_mixed_is_the_average_of_the_stage1_models(run):
  workdir, _ = run
  real, synthetic, mixed = (mix_lib._read(p, params_io.stored_shapes(p)) for p in (
      workdir / "stage1_real" / "params_step3", workdir / "stage1_synthetic" / "params_step3",
      workdir / "mixed"))
  assert real.keys() == mixed.keys()
  trained = [k for k in real if not np.array_equal(real[k], synthetic[k])]
  assert trained and all(k.startswith(("llm", "mixer")) for k in trained)  # towers stay frozen
  for key in real:
    np.testing.assert_array_equal(mixed[key], 0.5 * real[key] + 0.5 * synthetic[key], key)


def test_results_and_table(run):
  workdir, printed = run
  results = json.loads((workdir / "results.json").read_text())
  assert set(results["vqa"]) <= {"colour", "shape", "count", "yesno"} and results["vqa"]
  for value in [*results["vqa"].values(), results["rec_acc@0.5"], results["ocr_exact_match"]]:
    assert 0.0 <= value <= 1.0
  assert set(results["caption_loss"]) == {"real", "synthetic", "mixed"}
  for losses in results["caption_loss"].values():
    assert set(losses) == {"real", "synthetic"}
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
  assert results["chat"]["prompt"] == "Detect all objects shown in the image."
  assert "VQA accuracy" in printed and "REC Acc@0.5" in printed and "caption loss" in printed
  assert f"Assistant: {results['chat']['answer']}" in printed


def test_stages_chain_and_a_foreign_world_is_refused(tmp_path):
  config = train_config.load(f"{CONFIG}:fast,workdir={tmp_path}")
  stages = recipe.stages(config)
  assert stages["stage1_synthetic"].train.init_from == str(
      tmp_path / "stage1_real" / "params_step3")
  assert stages["stage2"].train.init_from == str(tmp_path / "mixed")
  moved = train_config.override(config, ["world", "root"], str(tmp_path / "elsewhere"))
  with pytest.raises(ValueError, match="not the world at"):
    recipe.run(moved)
  assert not (tmp_path / "elsewhere").exists()


def test_held_out_loss_does_not_depend_on_batching(run):
  """Padding rows of the last batch count nothing: 3-row and 8-row batches give the same loss."""
  from sphinx_jax.data import synthetic
  from sphinx_jax.data.tokenizer import Tokenizer
  from sphinx_jax.eval.loss import mean_loss
  from sphinx_jax.inference.sphinx_model import Sphinx
  workdir, _ = run
  exp = recipe.stages(train_config.load(f"{CONFIG}:fast,workdir={workdir}"))["stage1_real"]
  model = Sphinx.from_pretrained(workdir / "mixed")
  source = synthetic.sources(workdir / "world", "eval")["captions_synthetic"]
  tokenizer = Tokenizer(exp.data.tokenizer)
  small, large = (mean_loss(model, source, exp.data.layout, tokenizer, batch_size=b)
                  for b in (3, 8))
  assert small["tokens"] == large["tokens"] > 0 and small["skipped"] == 0
  assert abs(small["loss"] - large["loss"]) < 1e-5
