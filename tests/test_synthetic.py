"""The synthetic world: deterministic, boxes true to the pixels, readable by the pipeline."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sphinx_jax.configs import sphinx_preset
from sphinx_jax.data import pipeline, synthetic
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  return synthetic.write_world(tmp_path_factory.mktemp("world"), 16, 8, seed=3)


def files(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def records(path: str) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_same_seed_same_bytes(world, tmp_path):
  root = Path(world["corpus"]).parent
  again = synthetic.write_world(tmp_path / "a", 16, 8, seed=3)
  assert files(Path(again["corpus"]).parent) == files(root)
  other = synthetic.write_world(tmp_path / "b", 16, 8, seed=4)
  assert records(other["train"]["scenes"]) != records(world["train"]["scenes"])


def test_eval_split_is_held_out_and_keeps_answers(world):
  train, held = (records(world[s]["scenes"]) for s in ("train", "eval"))
  assert len(held) == 8 and not [s for s in held if s in train]
  vqa = records(world["eval"]["vqa"])
  assert {r["type"] for r in vqa} == {"colour", "shape", "count", "yesno"}
  assert all(r["answer"] for r in vqa)
  assert all(len(r["box"]) == 4 for r in records(world["eval"]["rec"]))


def test_boxes_enclose_the_drawn_objects(world):
  root = Path(world["train"]["rec"]).parent
  for s in records(world["train"]["scenes"]):
    pixels = np.asarray(Image.open(root / s["image"]).convert("RGB"))
    for o in s["objects"]:
      x1, y1, x2, y2 = o["box"]
      colour = np.all(pixels == synthetic.COLOURS[o["colour"]], axis=-1)
      assert colour[y1:y2, x1:x2].mean() > 0.4, o  # mostly the object (a triangle fills half)
      # Around the box (within the gap kept between things) the colour ends exactly at its edges.
      g = synthetic.GAP - 1
      near = np.zeros_like(colour)
      near[max(y1 - g, 0):y2 + g, max(x1 - g, 0):x2 + g] = True
      ys, xs = np.nonzero(colour & near)
      assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2], o
    if s["word"]:
      x1, y1, x2, y2 = s["word"]["box"]
      assert np.all(pixels[y1:y2, x1:x2] == 0, axis=-1).any()  # black ink inside


def test_tokenizer_ids(world):
  tok = Tokenizer(world["tokenizer"])
  assert (tok.sp.unk_id(), tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size <= sphinx_preset("tiny").llm.vocab_size


def test_every_record_loads_and_batches_flow(world):
  specs = synthetic.sources(Path(world["corpus"]).parent)
  corpus = specs.pop("corpus")
  config = pipeline.DataConfig(
      tokenizer=world["tokenizer"], sources=tuple(specs.values()), view_plan="tiny",
      tokens_per_image=sphinx_preset("tiny").image_tokens, seq_len=256,
      max_images=synthetic.FRAMES, batch_size=8, corpus=corpus, text_rows=1, threads=1)
  skips = SkipLog()
  assert pipeline.check(config, skips) == sum(len(s.open()) for s in (*specs.values(), corpus))
  assert len(skips) == 0, skips.summary()
  it = iter(pipeline.batches(config, skips))
  for _ in range(2):
    batch = next(it)
    assert batch["tokens"].shape == (9, 256)
  assert len(skips) == 0, skips.summary()
  evaluation = pipeline.DataConfig(
      tokenizer=world["tokenizer"], sources=tuple(synthetic.sources(Path(world["corpus"]).parent, "eval").values()),
      view_plan="tiny", tokens_per_image=sphinx_preset("tiny").image_tokens, seq_len=256,
      max_images=synthetic.FRAMES, threads=1)
  assert pipeline.check(evaluation, skips) > 0 and len(skips) == 0, skips.summary()
