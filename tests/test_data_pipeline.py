"""Pipelines: seeded determinism, exact resume from a saved iterator state, mixed image counts in
one batch, stage-1 batches with packed text rows, mixture weights, TFDS through data_source."""
import io

import jax
import numpy as np
import pytest

from sphinx_jax.data import batching, mimic_it, pipeline, sources
from sphinx_jax.data.sample import make_sample
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.data.tfds_source import Tfds
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.models.batch import padding_fraction
from tests import data_fixtures as fx


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Three sources (dialogs, REC, MIMIC-IT in-context) and a text corpus."""
  d = tmp_path_factory.mktemp("data")
  for i in range(4):
    (d / f"{i}.png").write_bytes(fx.png(fx.gray(i), size=(8 + i, 6)))
  dialogs = [{"image": f"{i}.png", "conversations": [
      {"from": "human", "value": f"<image>\nWhat is {i}?"},
      {"from": "gpt", "value": f"It is {i}."}]}
      for i in range(4)]
  recs = [{"image": f"{i}.png", "phrase": f"thing {i}", "box": [1, 1, 4, 4]} for i in range(3)]
  turns = [(f"LACR_INS_{i}", f"Q{i}?", f"A{i}.", [f"LACR_IMG_{i}"], [f"LACR_INS_{(i + 1) % 3}"])
           for i in range(3)]
  mimic = fx.mimic_it(d, "LACR", turns, {f"LACR_IMG_{i}": fx.png(fx.gray(i)) for i in range(3)})
  corpus = [{"text": f"the red circle number {i} is in the image"} for i in range(9)]
  return {"tokenizer": str(fx.tokenizer(d / "tok")),
          "sources": (sources.Conversations(str(fx.write_jsonl(d / "dialogs.jsonl", dialogs)),
                                            str(d)),
                      sources.Task(str(fx.write_jsonl(d / "rec.jsonl", recs)), "rec", str(d)),
                      mimic_it.MimicIt(**mimic, kind="in_context")),
          "corpus": sources.TextCorpus(str(fx.write_jsonl(d / "corpus.jsonl", corpus)))}


def config(data, **kw):
  base = dict(tokenizer=data["tokenizer"], sources=data["sources"], view_plan="sphinx",
              tokens_per_image=fx.K, seq_len=320, max_images=2, batch_size=2, corpus=data["corpus"], text_rows=1,
              seed=3, threads=2)
  return pipeline.DataConfig(**{**base, **kw})


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if k == "images":
      for name in a[k]:
        np.testing.assert_array_equal(a[k][name], b[k][name])
    else:
      np.testing.assert_array_equal(a[k], b[k])


def test_same_seed_same_batches_and_exact_resume(data):
  cfg = config(data)
  first = take(iter(pipeline.batches(cfg, SkipLog())), 10)
  again = take(iter(pipeline.batches(cfg, SkipLog())), 10)
  for a, b in zip(first, again):
    assert_same(a, b)
  assert {int(s) for b in first for s in b["source_id"][:, 0]} == {0, 1, 2, 3}  # 3 sources + corpus

  it = iter(pipeline.batches(cfg, SkipLog()))
  take(it, 7)
  state = it.get_state()
  resumed = iter(pipeline.batches(cfg, SkipLog()))
  resumed.set_state(state)
  for a, b in zip(take(resumed, 3), first[7:]):
    assert_same(a, b)

  other = take(iter(pipeline.batches(config(data, seed=4), SkipLog())), 10)
  assert any(not np.array_equal(a["tokens"], b["tokens"]) for a, b in zip(first, other))


def test_every_record_bad_fails_instead_of_hanging(data):
  cfg = config(data, seq_len=40, text_rows=0)  # nothing supervised fits: every record skipped
  with pytest.raises(ValueError, match="drawn for one batch row were all bad"):
    next(iter(pipeline.batches(cfg, SkipLog())))


PREFETCH = 4 * 2  # grain's read-ahead per iterator (pipeline.read_options at 2 threads)


def test_a_process_reads_only_its_rows_and_they_are_the_whole_batch_rows(data, monkeypatch):
  """Multi-host: each process decodes only its rows of the global batch, and they are the same
  rows as one process's, before and after a resume (the state is the same for every process)."""
  cfg = config(data, batch_size=4, text_rows=2, seq_len=256)
  decoded, real = [], pipeline.make_sample
  monkeypatch.setattr(pipeline, "make_sample",
                      lambda *a, **k: decoded.append(1) or real(*a, **k))
  whole_stream = pipeline.batches(cfg, SkipLog())
  whole = take(whole_stream, 4)
  whole_state = whole_stream.get_state()
  whole += take(whole_stream, 2)
  take(whole_stream, 14)
  whole_decoded, decoded[:] = len(decoded), []
  rows = [1, 2, 5]  # two mixture rows and one packed-corpus row
  mine = pipeline.batches(cfg, SkipLog(), rows=rows)
  got = take(mine, 4)
  state = mine.get_state()
  assert state == whole_state and state["step"] == 4
  resumed = pipeline.batches(cfg, SkipLog(), rows=rows)
  resumed.set_state(state)
  got += take(resumed, 2)
  for a, b in zip(got, whole):
    assert_same(a, jax.tree.map(lambda x: x[rows], b))
  take(resumed, 14)
  # 20 steps: all 4 mixture rows decoded vs this process's 2 (+ what grain's prefetch read ahead)
  assert 80 <= whole_decoded <= 80 + PREFETCH and 40 <= len(decoded) <= 40 + 2 * PREFETCH
  with pytest.raises(ValueError, match="a batch has rows 0 .. 5"):
    pipeline.batches(cfg, SkipLog(), rows=[6])


def test_stage1_rows(data):
  cfg = config(data, sources=data["sources"][:1], batch_size=3, text_rows=2, seq_len=256)
  batch = next(iter(pipeline.batches(cfg, SkipLog())))
  assert batch["tokens"].shape == (5, 256)
  np.testing.assert_array_equal(batch["source_id"][:, 0], [0, 0, 0, 1, 1])
  assert batch["image_mask"][:3].any(1).all() and not batch["image_mask"][3:].any()
  text = slice(3, 5)  # packed text: every slot real, all but the first supervised
  assert batch["valid"][text].all() and not batch["image_mask"][text].any()
  assert batch["loss_mask"][text, 1:].all() and not batch["loss_mask"][text, 0].any()
  assert cfg.source_names == ["dialogs", "corpus"]


def test_mixture_weights(data):
  cfg = config(data, sources=data["sources"][:2], weights=(3, 1), text_rows=0, corpus=None,
               batch_size=1)
  ids = [int(b["source_id"][0, 0]) for b in take(iter(pipeline.batches(cfg, SkipLog())), 16)]
  assert ids.count(0) == 12 and ids.count(1) == 4
  with pytest.raises(ValueError, match="positive"):
    config(data, weights=(1, 1, 0))
  sizes = [int(b["source_id"][0, 0]) for b in take(iter(pipeline.batches(
      config(data, text_rows=0, corpus=None, batch_size=1), SkipLog())), 20)]
  assert [sizes.count(i) for i in range(3)] == [8, 6, 6]  # proportional to 4, 3, 3 records


def test_mixed_image_counts_share_a_batch(tmp_path, data):
  tok = Tokenizer(data["tokenizer"])
  frames = [f"E4D_IMG_{i:08d}" for i in range(16)]
  images = {f: fx.png(fx.gray(i)) for i, f in enumerate(frames)}
  images.update({"SD_IMG_1": fx.png((1, 1, 1)), "SD_IMG_2": fx.png((2, 2, 2))})
  images.update({f"LACR_IMG_{i}": fx.png(fx.gray(i)) for i in range(4)})
  turns = [("E4D_INS_0", "What now?", "He walks.", frames, []),
           ("SD_INS_0", "Difference?", "None.", ["SD_IMG_1", "SD_IMG_2"], []),
           ("TXT_INS_0", "Hi?", "Hello.", [], [])]
  turns += [(f"LACR_INS_{i}", f"Q{i}?", f"A{i}.", [f"LACR_IMG_{i}"], []) for i in range(4)]
  paths = fx.mimic_it(tmp_path, "MIX", turns, images, train_config={
      "E4D_INS_0": [], "SD_INS_0": [], "TXT_INS_0": [],
      "LACR_INS_3": ["LACR_INS_0", "LACR_INS_1", "LACR_INS_2"]})
  kinds = ["video", "image", "text", "in_context"]
  examples = [mimic_it.MimicIt(**paths, kind=k).open()[i] for i, k in enumerate(kinds)]
  cfg = config(data, max_images=16, seq_len=512)
  rows = [make_sample(e, tok, cfg.layout, i) for i, e in enumerate(examples)]
  batch = batching.collate(rows, cfg.layout)
  assert batch["tokens"].shape == (4, 512)
  assert batch["images"]["vit"].shape == (4, 16, 1, 224, 224, 3)
  assert batch["images"]["convnext"].shape == (4, 16, 1, 256, 256, 3)
  counts = [16, 2, 0, 4]
  np.testing.assert_array_equal(batch["image_mask"].sum(1), [fx.K * n for n in counts])
  for row, n in enumerate(counts):
    assert not batch["images"]["vit"][row, n:].any()  # padded image slots stay zero
    length = batch["valid"][row].sum()
    assert batch["valid"][row, :length].all() and not batch["valid"][row, length:].any()
    assert batch["tokens"][row, 0] == tok.bos_id and batch["tokens"][row, length - 1] == tok.eos_id
    assert not (batch["loss_mask"][row] & ~batch["valid"][row]).any()
    assert not (batch["loss_mask"][row] & batch["image_mask"][row]).any()
    assert (batch["tokens"][row][batch["image_mask"][row]] == 0).all()


def test_tfds_classification(tmp_path, data):
  tfds = pytest.importorskip("tensorflow_datasets")
  from PIL import Image

  def encoded(colour):
    out = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(out, format="PNG")
    out.seek(0)
    return out

  class TinyPets(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(names=["cat", "dog"])}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(3):
        yield i, {"image": encoded(fx.gray(i)), "label": i % 2}

  TinyPets(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  source = Tfds("tiny_pets", "train", "classification", data_dir=str(tmp_path)).open()
  assert len(source) == 3
  prompts = {source[i].prompt.rsplit("Assistant: ", 1)[1] for i in range(3)}
  assert prompts == {"This is a cat\n###", "This is a dog\n###"}
  assert "### Human: Classify the image.\n###" in source[0].prompt
  sample = make_sample(source[0], Tokenizer(data["tokenizer"]), config(data).layout, 0)
  assert sample.images["vit"].shape == (1, 1, 224, 224, 3)


def test_file_formats(tmp_path):
  import base64
  import json

  import pyarrow as pa
  import pyarrow.parquet as pq

  from sphinx_jax.data.records import base64_image
  (tmp_path / "a.png").write_bytes(fx.png((5, 6, 7)))
  pq.write_table(pa.table({"content": ["one doc.", "two docs."]}), tmp_path / "corpus.parquet")
  corpus = sources.TextCorpus(str(tmp_path / "corpus.parquet")).open()
  assert [corpus[i].prompt for i in range(2)] == ["one doc.", "two docs."]
  assert corpus[1].supervise_eos and corpus.name == "corpus"
  pq.write_table(pa.table({"image": ["a.png"], "caption": ["A dot."]}), tmp_path / "caps.parquet")
  (tmp_path / "caps.json").write_text(json.dumps([{"image": "a.png", "caption": ["x.", "y."]}]))
  for path in ("caps.parquet", "caps.json"):
    example = sources.Captions(str(tmp_path / path), str(tmp_path)).open()[0]
    assert example.prompt in ("<image>A dot.", "<image>x.", "<image>y.")
    assert example.media[0][0].size == (8, 6)
  data = fx.png((5, 6, 7)) + b"\xfb\xff"  # bytes whose base64 differs in the URL-safe alphabet
  urlsafe = base64.urlsafe_b64encode(data).decode()
  assert "-" in urlsafe or "_" in urlsafe
  assert base64_image(urlsafe, "f", "r").size == (8, 6)


def test_building_batches_computes_nothing_on_the_default_device(data, tmp_path):
  """Image decoding, resizes and view tiling run on the host CPU device, never where the
  training step runs: with the default device moved to another device and implicit transfers
  to any device refused, a pipeline of sub-image views (bicubic resizes, fp16 nearest resize)
  and a stage-0 pairs batch are still built, and equal the ones built normally."""
  import jax
  from sphinx_jax.data import pairs, synthetic
  synthetic.write_world(tmp_path, 8, 2, seed=1)
  pairs_config = pairs.PairsConfig(tokenizer=str(tmp_path / "tokenizer.model"),
                                   sources=(synthetic.sources(tmp_path, "train")["towers"],),
                                   batch_size=4, negatives=2, text_len=56, threads=2)
  cfg = config(data, view_plan="sphinx_1k", tokens_per_image=fx.K, threads=2)

  def build():
    return (take(iter(pipeline.batches(cfg, SkipLog())), 2),
            next(iter(pairs.batches(pairs_config, SkipLog()))))

  expected = build()
  saved = {name: getattr(jax.config, name) for name in (
      "jax_default_device", "jax_transfer_guard_host_to_device",
      "jax_transfer_guard_device_to_device")}
  try:
    jax.config.update("jax_default_device", jax.devices()[-1])  # not the host CPU device (0)
    jax.config.update("jax_transfer_guard_host_to_device", "disallow")
    jax.config.update("jax_transfer_guard_device_to_device", "disallow")
    got = build()
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
  for a, b in zip(expected[0], got[0]):
    assert_same(a, b)
  for key in expected[1]:
    np.testing.assert_array_equal(expected[1][key], got[1][key])


def test_packed_rows_hold_the_mixture_samples_in_order(data):
  """pack=3: row k holds samples 3k, 3k+1, 3k+2 that fit, each its own segment with positions
  from 0, its images after the previous ones; samples equal the unpacked stream's; less padding."""
  base = dict(sources=data["sources"][:2], text_rows=0, corpus=None, batch_size=2, seq_len=320)
  plain = take(iter(pipeline.batches(config(data, **base), SkipLog())), 3)
  reader = pipeline.batches(config(data, **base, pack=3), SkipLog())
  packed = next(reader)
  unpacked = [(b, r) for b in plain for r in range(2)]  # samples 0..5 of the stream
  for row in range(2):
    segments = packed["segment_ids"][row]
    assert segments.max() >= 2
    image = 0
    for s in range(1, segments.max() + 1):
      batch, r = unpacked[3 * row + s - 1]
      at = segments == s
      n = int(batch["valid"][r].sum())
      np.testing.assert_array_equal(packed["tokens"][row, at], batch["tokens"][r, :n])
      np.testing.assert_array_equal(packed["positions"][row, at], np.arange(n))
      np.testing.assert_array_equal(packed["loss_mask"][row, at], batch["loss_mask"][r, :n])
      images = int(batch["image_mask"][r].sum()) // fx.K
      np.testing.assert_array_equal(packed["images"]["vit"][row, image:image + images],
                                    batch["images"]["vit"][r, :images])
      image += images
  assert reader.packed + reader.overflow == 6 and reader.packed == int(
      sum(packed["segment_ids"][r].max() for r in range(2)))
  assert padding_fraction(packed) < np.mean([padding_fraction(b) for b in plain])
