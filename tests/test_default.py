"""The embedded default end to end, in its `fast` variant (3 steps a stage, a 32-scene world):
`python -m launch train` with the config argument, then the files and the table it produces,
and what a rerun reuses or rebuilds."""
import contextlib
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main
from sphinx_jax.recipe import chain as recipe
from sphinx_jax.checkpoints import params_io
from sphinx_jax.data import pipeline, synthetic
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.train import loop
from launch import config_files

CONFIG = "default"  # launch/configs/default.py, by its shipped name


def _run(workdir: Path, *overrides: str) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(["train", "--config", f"{CONFIG}:fast,workdir={workdir}", *overrides]) == 0
  return out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, what the command printed) of one fast default run."""
  workdir = tmp_path_factory.mktemp("default") / "run"
  return workdir, _run(workdir)


def test_writes_every_stage_the_mix_the_plot_and_the_chat(run):
  workdir, _ = run
  assert (workdir / "stage0" / "params" / "config.json").is_file()
  assert json.loads((workdir / "stage0" / "zero_shot.json").read_text())["scenes"] == 8
  for stage in ("stage0", "stage1_real", "stage1_synthetic", "stage2"):
    lines = (workdir / stage / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3, stage
    assert all(math.isfinite(v) for line in lines for v in json.loads(line).values()
               if v is not None)  # valid JSON: json.loads refuses no NaN, so check by hand
    assert "NaN" not in "".join(lines)
  for stage in ("stage1_real", "stage1_synthetic", "stage2"):
    assert (workdir / stage / "params_step3" / "config.json").is_file(), stage
  stage2 = params_io.read_config(workdir / "stage2" / "params_step3")
  assert (stage2["view_plan"], stage2["n_views"]) == ("mini_1k", 5)  # sub-images in stage 2
  assert params_io.read_config(workdir / "mixed")["n_views"] == 1  # one global view in stage 1
  assert (workdir / "world" / "eval" / "vqa.jsonl").is_file()
  for png in ("loss.png", "chat.png"):
    with Image.open(workdir / png) as image:
      assert image.format == "PNG" and min(image.size) > 100
  for name in ("vqa", "vqa_swapped", "rec", "ocr", "detection"):
    assert len((workdir / "eval" / name / "predictions.jsonl").read_text().splitlines()) <= 8


def test_stage0_trains_the_towers_and_stage1_keeps_them_frozen(run):
  workdir, _ = run
  start, real = (params_io.read_leaves(p, params_io.stored_shapes(p)) for p in (
      workdir / "stage0" / "params", workdir / "stage1_real" / "params_step3"))
  towers = [k for k in start if k.startswith(("clip", "convnext", "dinov2", "qformer"))]
  assert towers and all(np.array_equal(start[k], real[k]) for k in towers)
  assert any(not np.array_equal(start[k], real[k]) for k in start if k.startswith("llm"))


def test_mixed_is_the_average_of_the_stage1_models(run):
  workdir, _ = run
  real, synthetic, mixed = (params_io.read_leaves(p, params_io.stored_shapes(p)) for p in (
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
  assert set(results["vqa"]) == {"colour", "shape", "count", "yesno"}
  for key in ("rec_acc@0.5", "ocr_exact_match", "detection_f1@0.5", "answers_change_with_image",
              "wall_seconds"):
    assert key in results
  assert set(results["baseline"]) == {"colour", "shape", "count", "yesno", "ocr", "rec",
                                      "detection"}
  assert {"clip", "convnext", "qformer", "chance", "knn"} <= set(results["towers"])
  assert set(results["probe"]) == {"colour", "shape", "count", "yesno"}
  assert set(results["caption_loss"]) == set(results["text_loss"]) == {
      "start", "real", "synthetic", "mixed"}
  for losses in results["caption_loss"].values():
    assert set(losses) == {"real", "synthetic"}
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
  assert set(results["seconds"]) == set(recipe.STEPS)
  assert results["chat"]["prompt"] == "Detect all objects shown in the image."
  for text in ("zero-shot retrieval", "Linear probe", "VQA colour", "majority", "REC Acc@0.5",
               "detection F1@0.5", "swapped", "text only", "python -m launch chat",
               "python -m launch eval"):
    assert text in printed, text
  assert f"Assistant: {results['chat']['answer']}" in printed


def test_a_rerun_reuses_every_step(run):
  workdir, _ = run
  before = json.loads((workdir / "results.json").read_text())["seconds"]
  printed = _run(workdir)
  assert json.loads((workdir / "results.json").read_text())["seconds"] == before
  assert "VQA colour" in printed and not (workdir / "stale").exists()


def test_a_changed_stage_changes_its_key_and_the_later_ones_only(tmp_path):
  """What a rerun rebuilds (a changed stage and everything reading it) follows from the steps'
  keys (and `_run_step`, below). Rebuilding them for real (a stage 2 and a report, ~4 minutes of
  the suite) was this test's form until 2026-12-08, when it passed."""
  base = config_files.load(f"{CONFIG}:fast,workdir={tmp_path}")
  stage2 = dataclasses.replace(base.stage2, train=dataclasses.replace(base.stage2.train, steps=4))
  before, after = recipe.keys(base), recipe.keys(dataclasses.replace(base, stage2=stage2))
  assert [k for k in recipe.STEPS if before[k] != after[k]] == ["stage2", "report"]


def test_a_step_built_under_another_key_is_set_aside_and_rebuilt(tmp_path):
  step, built = tmp_path / "stage2", []

  def build():
    step.mkdir(exist_ok=True)
    (step / "params").write_text(str(len(built)))
    built.append(step)

  def run_step(key: str):
    recipe._run_step(tmp_path, "stage2", step, key, (step / "params").is_file, build, 6)

  run_step("a")
  run_step("a")  # done under this key: reused
  assert len(built) == 1
  run_step("b")
  assert len(built) == 2 and (step / "params").read_text() == "1"
  stale = [p.name for p in (tmp_path / "stale").iterdir()]
  assert stale == ["stage2-a"] and (tmp_path / "stale" / "stage2-a" / "params").read_text() == "0"


def test_stages_chain_and_a_foreign_world_is_refused(tmp_path):
  config = config_files.load(f"{CONFIG}:fast,workdir={tmp_path}")
  stages = recipe.stages(config)
  assert stages["stage1_real"].train.init_from == str(tmp_path / "stage0" / "params")
  assert stages["stage1_synthetic"].train.init_from == str(
      tmp_path / "stage1_real" / "params_step3")
  assert stages["stage2"].train.init_from == str(tmp_path / "mixed")
  moved = config_files.override(config, ["world", "root"], str(tmp_path / "elsewhere"))
  with pytest.raises(ValueError, match="not the world at"):
    recipe.run(moved)
  assert not (tmp_path / "elsewhere").exists()


def test_fast_and_full_variants_have_their_own_workdirs_and_keys():
  fast, full = (config_files.load(f"{CONFIG}{arg}") for arg in (":fast", ""))
  assert (fast.workdir, full.workdir) == ("runs/default_fast", "runs/default")
  moved = config_files.load(f"{CONFIG}:fast,workdir=runs/default")
  full_keys, fast_keys = recipe.keys(full), recipe.keys(moved)
  assert all(full_keys[k] != fast_keys[k] for k in recipe.STEPS)  # nothing reused across sizes


def test_held_out_loss_does_not_depend_on_batching(run):
  """Padding rows of the last batch count nothing: 3-row and 8-row batches give the same loss."""
  from sphinx_jax.data import synthetic
  from sphinx_jax.data.tokenizer import Tokenizer
  from sphinx_jax.recipe.heldout_loss import mean_loss
  from sphinx_jax.inference.sphinx_model import Sphinx
  workdir, _ = run
  exp = recipe.stages(config_files.load(f"{CONFIG}:fast,workdir={workdir}"))["stage1_real"]
  model = Sphinx.from_pretrained(workdir / "mixed")
  source = synthetic.sources(workdir / "world", "eval")["captions_synthetic"]
  tokenizer = Tokenizer(exp.data.tokenizer)
  layout = exp.data.for_model(model.config).layout
  small, large = (mean_loss(model, source, layout, tokenizer, batch_size=b) for b in (3, 8))
  assert small["tokens"] == large["tokens"] > 0 and small["skipped"] == 0
  assert abs(small["loss"] - large["loss"]) < 1e-5


def _scalar_tags(tensorboard: Path) -> set[str]:
  """The scalar tags of a TensorBoard log (its TFRecord files read with tensorboardX's protos)."""
  from tensorboardX.proto.event_pb2 import Event
  tags = set()
  for path in tensorboard.glob("events.out.tfevents.*"):
    data, at = path.read_bytes(), 0
    while at < len(data):
      length = int.from_bytes(data[at:at + 8], "little")
      event = Event.FromString(data[at + 12:at + 12 + length])
      tags |= {v.tag for v in event.summary.value}
      at += 12 + length + 4
  return tags


def test_stage1_metrics_hold_each_sources_loss(run):
  """Stage 1 real mixes captions (image rows) and the text corpus (text-only rows): the loss per
  source is logged, and equals the loss over the rows with and without images."""
  workdir, _ = run
  metrics = [json.loads(line) for line in
             (workdir / "stage1_real" / "metrics.jsonl").read_text().splitlines()]
  for m in metrics:
    assert math.isclose(m["loss/captions_real"], m["loss_image_text"], rel_tol=1e-5)
    assert math.isclose(m["loss/corpus"], m["loss_text_only"], rel_tol=1e-5)
  tags = _scalar_tags(workdir / "stage1_real" / "tensorboard")
  assert {"train/loss/captions_real", "train/loss/corpus"} <= tags
  stage2 = json.loads((workdir / "stage2" / "metrics.jsonl").read_text().splitlines()[-1])
  assert {k for k in stage2 if k.startswith("loss/")} == {
      f"loss/{name}" for name in ("vqa_dialogs", "rec_dialogs", "ocr", "detection", "grounded",
                                  "difference", "in_context", "video")}


def test_data_command_shows_each_training_stage_of_a_recipe(tmp_path, capsys):
  assert main(["data", "--config", f"{CONFIG}:fast,workdir={tmp_path}", "--show", "1",
               "--config.stage2.data.seq_len=400"]) == 0
  out = capsys.readouterr().out
  assert [line for line in out.splitlines() if line.startswith("===")] == [
      "=== stage1_real", "=== stage1_synthetic", "=== stage2"]
  assert out.count("--- sample 0:") == 3 and (tmp_path / "world" / "tokenizer.model").is_file()


def test_every_record_of_the_default_fits_its_stage_whole(tmp_path):
  """No training record of the default's stages is skipped or cut at its stage's seq_len (on a
  200-scene world: its longest captions, dialogs and two-image samples): a row too short for
  the five-view images plus their text once made stage 2 skip every two-image sample and stage 1
  train on captions cut after their first words."""
  r = config_files.load(f"{CONFIG}:workdir={tmp_path}", [])
  synthetic.write_world(r.world.root, 200, 8, seed=0)
  for name in ("stage1_real", "stage1_synthetic", "stage2"):
    exp = recipe.stages(r)[name]
    data = exp.data.for_model(loop.model_config(dataclasses.replace(exp.train, init_from="")))
    skips = SkipLog()
    assert pipeline.check(data, skips) > 0
    assert len(skips) == 0 and not skips.notes, (name, skips.summary())
