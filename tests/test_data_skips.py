"""Bad records are skipped and counted with file and record id (strict mode raises on the first);
over-long samples are cut in text only; `launch data` prints samples and the skip summary."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from launch.__main__ import main
from sphinx_jax.data import example as ex
from sphinx_jax.data import mimic_it, pipeline, sources
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.sample import CUT, Layout, make_sample
from sphinx_jax.data.skips import BadRecord, SkipLog
from sphinx_jax.data.tokenizer import Tokenizer
from tests import data_fixtures as fx


def dialog(image, i):
  return {"image": image, "conversations": [
      {"from": "human", "value": f"<image>\nWhat is {i}?"},
      {"from": "gpt", "value": f"It is {i}."}]}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
  """One corrupt PNG, one missing file, one truncated JSON line, one bad base64 image."""
  d = tmp_path_factory.mktemp("bad")
  (d / "good.png").write_bytes(fx.png((9, 9, 9)))
  (d / "corrupt.png").write_bytes(fx.png((9, 9, 9))[:40])
  lines = fx.write_jsonl(d / "dialogs.jsonl", [dialog("good.png", 0), dialog("corrupt.png", 1),
                                               dialog("missing.png", 2)],
                         tail='{"image": "good.png", "conversations": [{"from": "hu\n')
  turns = [(f"LA_INS_{i}", f"Q{i}?", f"A{i}.", [f"LA_IMG_{i}"], []) for i in range(3)]
  images = {"LA_IMG_0": fx.png((1, 2, 3)), "LA_IMG_1": "not*base64!", "LA_IMG_2": fx.png((3, 2, 1))}
  srcs = (sources.Conversations(str(lines), str(d)),
          mimic_it.MimicIt(**fx.mimic_it(d, "LA", turns, images)))
  tok = fx.tokenizer(d / "tok")
  config = pipeline.DataConfig(tokenizer=str(tok), sources=srcs, view_plan="sphinx",
                               tokens_per_image=fx.K, seq_len=256, max_images=1,
                               batch_size=2, threads=2)
  return d, config


def test_bad_records_are_skipped_and_named(bad):
  _, config = bad
  skips = SkipLog()
  assert pipeline.check(config, skips) == 3  # 1 good dialog + 2 good MIMIC-IT instructions
  assert {(f.rsplit("/", 1)[-1], r) for f, r in skips.records} == {
      ("dialogs.jsonl", "line 2"), ("dialogs.jsonl", "line 3"), ("dialogs.jsonl", "line 4"),
      ("LA.parquet", "LA_IMG_1")}
  reasons = " ".join(skips.records.values())
  for why in ("unreadable image", "missing image file", "bad JSON line", "bad base64"):
    assert why in reasons
  summary = skips.summary()
  assert summary.startswith("skipped records: 4") and "[line 3]: missing image file" in summary

  skips = SkipLog()  # the training stream drops them too, and counts each once
  it = iter(pipeline.batches(config, skips))
  batches = [next(it) for _ in range(6)]
  assert len(skips) == 4
  assert all(b["valid"][:, 0].all() for b in batches)


def test_strict_raises_on_the_first(bad):
  _, config = bad
  strict = pipeline.DataConfig(**{**config.__dict__, "strict": True})
  with pytest.raises(BadRecord,
                     match=r"dialogs.jsonl \[line 2\]: \S+/corrupt.png: unreadable image"):
    pipeline.check(strict, SkipLog())
  with pytest.raises(BadRecord):
    next(iter(pipeline.batches(strict, SkipLog())))


def test_over_long_cut_in_text_never_through_an_image(bad):
  _, config = bad
  tok = Tokenizer(config.tokenizer)
  image = ex.Example(ex.IMAGE + "a b c", ("a b c",), ((Image.new("RGB", (4, 4)),),), True, "f",
                     "r")
  layout = Layout(VIEW_PLANS["sphinx"], tokens_per_image=4, seq_len=7, max_images=1)
  sample = make_sample(image, tok, layout, 0)  # BOS + 4 image slots + 2 text tokens
  assert len(sample.tokens) == 7 and sample.image_mask.sum() == 4
  assert sample.loss_mask[5:].all() and sample.tokens[-1] != tok.eos_id
  assert sample.notes == (CUT,)  # counted and named by the skip log, not silent
  assert make_sample(image, tok, dataclasses.replace(layout, seq_len=64), 0).notes == ()
  with pytest.raises(BadRecord, match="image block crosses"):
    make_sample(image, tok, Layout(VIEW_PLANS["sphinx"], 4, 4, 1), 0)
  with pytest.raises(BadRecord, match="nothing supervised"):
    make_sample(ex.Example("long question a b c", ("c",)), tok, layout, 0)
  with pytest.raises(BadRecord, match="max_images"):
    make_sample(image, tok, Layout(VIEW_PLANS["sphinx"], 4, 64, 0), 0)


@pytest.mark.parametrize("record, reason", [
    ({"image": "good.png", "phrase": "x", "box": [0, 0, 9, 6]}, "outside"),
    ({"image": "good.png", "phrase": "x"}, "missing field 'box'"),
])
def test_bad_task_records(bad, record, reason):
  d, _ = bad
  source = sources.Task(str(fx.write_jsonl(d / "task.jsonl", [record])), "rec", str(d)).open()
  with pytest.raises(BadRecord, match=reason):
    source[0]


@pytest.mark.parametrize("conversations, reason", [
    ([], "empty conversation"),
    ([{"from": "gpt", "value": "hi"}], "alternate"),
    ([{"from": "human", "value": "hi"}], "no answer"),
    ([{"from": "robot", "value": "hi"}], "unknown dialog role"),
])
def test_bad_dialogs(bad, conversations, reason):
  d, _ = bad
  path = fx.write_jsonl(d / "dialog.jsonl", [{"conversations": conversations}])
  with pytest.raises(BadRecord, match=reason):
    sources.Conversations(str(path)).open()[0]


def test_launch_data_shows_samples_and_skips(bad, tmp_path, capsys):
  _, config = bad
  path = tmp_path / "cfg.py"
  path.write_text("from sphinx_jax.data.mimic_it import MimicIt\n"
                  "from sphinx_jax.data.pipeline import DataConfig\n"
                  "from sphinx_jax.data.sources import Conversations\n"
                  f"DATA = {config!r}\n")
  assert main(["data", "--config", str(path), "--show", "3", "--check"]) == 0
  out = capsys.readouterr().out
  assert out.count("--- sample") == 3 and "<s><image>" in out and "⟦" in out
  assert "skipped records: 4" in out and "LA_IMG_1" in out

  assert main(["data", "--config", "data_example", "--show", "2"]) == 0
  out = capsys.readouterr().out
  assert out.count("--- sample") == 2 and "skipped records: none" in out
  np.testing.assert_equal(main(["data", "--config", str(tmp_path / "none.py")]), 1)
