"""Every benchmark end to end on the tiny converted SPHINX (`release`), each on a 10-sample fixture
in its own file layout; resuming after an interruption; the command line."""
import json
import re

import numpy as np
import pytest

from launch.__main__ import main
from sphinx_jax.inference.sphinx_model import stop_ids
from sphinx_jax import Sphinx
from sphinx_jax.data.templates import SYSTEM
from sphinx_jax.eval import prompts, runner
from sphinx_jax.eval.benchmarks import BENCHMARKS
from sphinx_jax.eval.samples import benchmark_image
from sphinx_jax.models.batch import bucketed
from sphinx_jax.recipe import synthetic_benchmarks
from tests.fixtures.eval import formats

synthetic_benchmarks.register()

NEW_TOKENS = 3  # one generation budget for all runs: fewer programs to compile


@pytest.fixture(scope="module")
def model(release):
  return Sphinx.from_pretrained(release[2])


def _lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


# what each benchmark's summary reports
METRIC = {"vqav2": "accuracy", "okvqa": "accuracy", "gqa": "accuracy", "vizwiz": "accuracy",
          "textvqa": "accuracy", "textvqa_ocr": "accuracy", "ocrvqa": "accuracy",
          "scienceqa": "accuracy", "seed": "per_question_type", "mmbench": "circular_accuracy",
          "pope": "adversarial", "mme": "perception", "refcoco": "acc@0.5",
          "refcoco+": "acc@0.5", "refcocog": "acc@0.5", "coco_captions": "cider",
          "llava_bench": "note", "mmvet": "note", "synthetic_vqa": "per_answer_type",
          "synthetic_ocr": "accuracy", "synthetic_rec": "acc@0.5",
          "synthetic_detection": "f1@0.5", "synthetic_vqa_swapped": "per_answer_type"}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_end_to_end(model, tmp_path, name):
  assert set(METRIC) == set(BENCHMARKS)
  data = formats.write(name, tmp_path / "data")
  shots = 1 if name == "coco_captions" else 0  # 4+ shots exceed the tiny model's 512 positions
  summary = runner.evaluate(model, name, data, tmp_path / "out", batch_size=8, shots=shots,
                            max_new_tokens=NEW_TOKENS, progress=False)
  records = _lines(tmp_path / "out" / "predictions.jsonl")
  assert summary["samples"] == len(records) == 10 and METRIC[name] in summary
  assert len({r["id"] for r in records}) == 10
  assert all(isinstance(r["prediction"], str) for r in records)
  assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
  if name == "llava_bench":
    assert len(_lines(tmp_path / "out" / "answers.jsonl")) == 10
  if name == "mmvet":
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 10


def test_interrupted_run_resumes_to_the_same_summary(model, tmp_path, monkeypatch):
  data = formats.write("vqav2", tmp_path / "data")
  args = {"batch_size": 8, "max_new_tokens": NEW_TOKENS, "progress": False}
  whole = runner.evaluate(model, "vqav2", data, tmp_path / "whole", **args)

  calls, real = [], runner.generate_batch

  def interrupted(model, prompts, **kwargs):
    calls.append(len(prompts))
    if len(calls) == 2:
      raise KeyboardInterrupt
    return real(model, prompts, **kwargs)

  monkeypatch.setattr(runner, "generate_batch", interrupted)
  with pytest.raises(KeyboardInterrupt):
    runner.evaluate(model, "vqav2", data, tmp_path / "cut", **args)
  predictions = tmp_path / "cut" / "predictions.jsonl"
  assert len(_lines(predictions)) == 8 and not (tmp_path / "cut" / "summary.json").exists()
  with open(predictions, "a") as f:
    f.write('{"id": "108", "predic')  # killed in the middle of a write
  calls.clear()
  resumed = runner.evaluate(model, "vqav2", data, tmp_path / "cut", **args)
  assert calls == [2]  # only the two unfinished samples were computed
  assert resumed == whole
  assert sorted(_lines(predictions), key=lambda r: r["id"]) == \
      sorted(_lines(tmp_path / "whole" / "predictions.jsonl"), key=lambda r: r["id"])
  with pytest.raises(ValueError, match="other settings"):
    runner.evaluate(model, "vqav2", data, tmp_path / "cut", batch_size=8, max_new_tokens=5)
  # another scorer rescores the finished predictions, nothing is generated again
  calls.clear()
  rescored = runner.evaluate(model, "vqav2", data, tmp_path / "cut", scorer="m4c", **args)
  assert calls == [] and whole["scorer"] == "vqa" and rescored["scorer"] == "m4c"
  with pytest.raises(ValueError, match=r"--scorer bleu: expected one of \['vqa'"):
    runner.evaluate(model, "vqav2", data, tmp_path / "cut", scorer="bleu", **args)


def test_batched_rows_match_single_prompt_generation(model, tmp_path):
  """Rows of one batch (own images, padding rows, a longer padded length) decode exactly as
  `Sphinx.generate_ids` decodes each prompt alone."""
  samples = BENCHMARKS["vqav2"].read(formats.write("vqav2", tmp_path), "val2014")
  picked = [samples[0], samples[5], samples[9]]
  stops = (stop_ids(model.tokenizer),)
  rows = runner.generate_batch(model, runner._prepare(model, picked), rows=8, length=256,
                                   n_images=1, max_new_tokens=NEW_TOKENS, stops=stops,
                                   eos_id=model.tokenizer.eos_id)
  for sample, row in zip(picked, rows):
    pixels = model.preprocess(benchmark_image(sample.images[0]))
    ids = model.tokenizer.encode(prompts.text(sample), bos=True)
    assert row == model.generate_ids(pixels, ids, NEW_TOKENS, stop_sequences=stops)


def test_in_context_prompts_place_each_image_at_its_turn(model, tmp_path):
  data = formats.write("coco_captions", tmp_path / "data")
  samples = BENCHMARKS["coco_captions"].read(data, "test", shots=4, seed=0)
  again = BENCHMARKS["coco_captions"].read(data, "test", shots=4, seed=0)
  sample = samples[0]
  assert sample.images == again[0].images and len(sample.images) == 5  # 4 demos + the query
  assert sample.images[-1].name == "COCO_val2014_000000000000.jpg"
  assert all("train2014" in str(p) for p in sample.images[:4])
  assert [a for _, a in sample.history] == [
      f"A red cat sits on mat {int(p.stem[-2:]) % 3}." for p in sample.images[:4]]
  tokens, mask = prompts.tokens(model.tokenizer, sample, model.config.image_tokens)
  k = model.config.image_tokens
  starts = np.flatnonzero(mask[1:] & ~mask[:-1]) + 1
  assert mask.sum() == 5 * k and len(starts) == 5
  stretches = [tokens[a:b].tolist() for a, b in zip([0, *(starts + k)], [*starts, len(tokens)])]
  tok = model.tokenizer  # text between images is tokenised per stretch, as in training
  assert stretches[0] == tok.encode(f"{SYSTEM}\n\n### Human:", bos=True)
  for (_, caption), stretch in zip(sample.history, stretches[1:]):
    assert stretch == tok.encode_segment(
        f"{prompts.CAPTION}\n### Assistant: {caption}\n### Human:")
  assert stretches[-1] == tok.encode_segment(f"{prompts.CAPTION}\n### Assistant:")
  with pytest.raises(ValueError, match="exceeds max_seq_len 512"):  # 5 x 115 image slots
    runner.evaluate(model, "coco_captions", data, tmp_path / "out", shots=4, progress=False)


def test_eval_command_resumes_and_reports(model, release, tmp_path, capsys):
  data = formats.write("pope", tmp_path / "data")
  out = tmp_path / "out"
  args = ["eval", "--checkpoint", str(release[2]), "--benchmark", "pope", "--data", str(data),
          "--out", str(out), "--max-new-tokens", str(NEW_TOKENS), "--no-progress"]
  assert main(args + ["--limit", "4"]) == 0
  assert json.loads((out / "summary.json").read_text())["samples"] == 4
  assert '"benchmark": "pope"' in capsys.readouterr().out
  # the same run continued over all samples (here through the API): the first 4 are kept
  first = _lines(out / "predictions.jsonl")
  summary = runner.evaluate(model, "pope", data, out, max_new_tokens=NEW_TOKENS,
                            checkpoint=str(release[2].resolve()), progress=False)
  assert summary["samples"] == 10 and set(summary) >= {"random", "adversarial", "all"}
  assert _lines(out / "predictions.jsonl")[:4] == first
  assert main(args[:5] + ["--data", str(tmp_path / "nowhere"), "--benchmark", "pope"]) == 1
  err = capsys.readouterr().err
  assert str(tmp_path / "nowhere") in err and err.count("\n") == 1


def test_a_missing_image_is_an_error_naming_it(model, tmp_path):
  data = formats.write("gqa", tmp_path / "data")
  (data / "images" / "n3.jpg").unlink()
  with pytest.raises(FileNotFoundError, match="n3.jpg: no such image file"):
    runner.evaluate(model, "gqa", data, tmp_path / "out", max_new_tokens=NEW_TOKENS,
                    progress=False)
  assert bucketed(1) == 128 and bucketed(129) == 256


@pytest.mark.parametrize("name,content", [(runner.RUN, b"{not json"), (runner.RUN, b"[]"),
                                          (runner.RUN, b"\xff\xfe"),
                                          (runner.PREDICTIONS, b'5\n{"id": "1"}\n')])
def test_a_damaged_run_file_is_an_error_naming_it(model, tmp_path, name, content):
  data = formats.write("pope", tmp_path / "data")
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / name).write_bytes(content)
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "out" / name))):
    runner.evaluate(model, "pope", data, tmp_path / "out", max_new_tokens=NEW_TOKENS,
                    progress=False)


@pytest.mark.parametrize("flag,value", [("--max-new-tokens", "0"), ("--max-new-tokens", "-2"),
                                        ("--limit", "-1"), ("--batch-size", "0"),
                                        ("--shots", "-4")])
def test_eval_counts_out_of_range_are_one_line(release, tmp_path, capsys, flag, value):
  data = formats.write("coco_captions", tmp_path / "data")
  assert main(["eval", "--checkpoint", str(release[2]), "--benchmark", "coco_captions", "--data",
               str(data), "--out", str(tmp_path / "out"), "--limit", "1", "--no-progress",
               flag, value]) == 1
  err = capsys.readouterr().err
  assert f"{flag} {value}: must be at least" in err and err.count("\n") == 1
  assert not (tmp_path / "out").exists()
