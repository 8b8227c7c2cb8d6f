"""The synthetic world: deterministic, boxes true to the pixels, readable by the pipeline."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sphinx_jax.configs import sphinx_preset
from sphinx_jax.data import pipeline, synthetic, synthetic_scenes, synthetic_text
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
  root = Path(world["tokenizer"]).parent
  again = synthetic.write_world(tmp_path / "a", 16, 8, seed=3)
  assert files(Path(again["tokenizer"]).parent) == files(root)
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
      colour = np.all(pixels == synthetic_scenes.COLOURS[o["colour"]], axis=-1)
      assert colour[y1:y2, x1:x2].mean() > 0.4, o  # mostly the object (a triangle fills half)
      # Around the box (within the gap kept between things) the colour ends exactly at its edges.
      g = 2 * synthetic_scenes.MARGIN - 1
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
  specs = synthetic.sources(Path(world["tokenizer"]).parent)
  corpus = specs.pop("corpus")
  specs.pop("towers")  # image-text pairs for stage 0 (data.pairs), not dialog samples
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
      tokenizer=world["tokenizer"], sources=tuple(v for k, v in synthetic.sources(
          Path(world["tokenizer"]).parent, "eval").items() if k != "towers"),
      view_plan="tiny", tokens_per_image=sphinx_preset("tiny").image_tokens, seq_len=256,
      max_images=synthetic.FRAMES, threads=1)
  assert pipeline.check(evaluation, skips) > 0 and len(skips) == 0, skips.summary()


def test_things_fill_their_own_cells_which_are_the_patches_of_the_padded_square(world):
  cell, margin = synthetic_scenes.CELL, synthetic_scenes.MARGIN
  pad = (max(synthetic_scenes.IMAGE_SIZE) - synthetic_scenes.IMAGE_SIZE[1]) // 2
  assert pad % cell == 0 and max(synthetic_scenes.IMAGE_SIZE) // cell == 5  # mini: 5x5 patches
  for s in records(world["train"]["scenes"]):
    used = []
    for o in s["objects"]:
      x1, y1, x2, y2 = o["box"]
      span = synthetic_scenes.SPAN[o["size"]]
      assert (x1 - margin) % cell == 0 and (y1 - margin) % cell == 0, o
      assert x2 - x1 == y2 - y1 == span * cell - 2 * margin, o
      c, r = (x1 - margin) // cell, (y1 - margin) // cell
      used += [(c + i, r + j) for i in range(span) for j in range(span)]
    if s["word"]:
      x1, y1, x2, y2 = s["word"]["box"]
      assert x1 // cell == (x2 - 1) // cell and y1 // cell == (y2 - 1) // cell, s["word"]
      used.append((x1 // cell, y1 // cell))
    assert len(used) == len(set(used)), s  # no cell holds two things
    assert all(0 <= c < 5 and 0 <= r < 3 for c, r in used)


def test_alternatives_change_one_thing_of_their_kind():
  rng = np.random.default_rng(0)
  small, large = synthetic_scenes.shape_box((0, 0), "small"), synthetic_scenes.shape_box(
      (3, 1), "large")
  word = synthetic_scenes.word_box((2, 0), "cat")
  assert (small, large, word) == ([2, 2, 18, 18], [62, 22, 98, 58], [41, 4, 59, 15])
  scene = {"objects": [synthetic_scenes.object_record("red", "circle", "small", small),
                       synthetic_scenes.object_record("blue", "square", "large", large)],
           "word": {"text": "cat", "box": word, "position": synthetic_scenes.position(word)}}
  truth = synthetic_text.tags(scene)
  assert truth == "small red circle top left, large blue square bottom right; 2 shapes; word cat top"
  for kind, n in (("colour", 3), ("shape", 2), ("word", 9), ("position", 8), ("count", 2)):
    found = synthetic_text.alternatives(scene, kind, np.random.default_rng(1))
    assert len(found) == n and truth not in found and len(set(found)) == n, kind
  assert all("; 2 shapes;" not in t for t in synthetic_text.alternatives(scene, "count", rng))
  negatives = synthetic_text.negatives(scene, rng)
  assert len(negatives) == 3 and truth not in negatives
  assert synthetic_text.regions(scene) == [
      {"phrase": "small red circle", "box": small}, {"phrase": "large blue square", "box": large},
      {"phrase": "word cat", "box": word}]


def test_each_split_has_its_own_corpus_and_tower_pairs(world):
  train, held = (records(world[s]["corpus"]) for s in ("train", "eval"))
  assert train and held and not set(map(str, held)) & set(map(str, train))
  pairs = records(world["train"]["towers"])
  assert len(pairs) == 16 and all(p["negatives"] and p["regions"] for p in pairs)


def test_dialog_turns_never_answer_each_other():
  scene = {"objects": [synthetic_scenes.object_record("red", "circle", "small", [2, 2, 18, 18])],
           "word": None}
  about_it = ("What colour is the circle?", "What shape is the red object?",
              "Is there a red circle?")
  for seed in range(40):
    turns = synthetic_text.vqa_dialog(scene, np.random.default_rng(seed))
    questions = [q.split("\n")[0] for q, _ in turns]
    assert len(turns) <= synthetic_text.DIALOG_TURNS and len(set(questions)) == len(questions)
    assert sum(q in about_it for q in questions) <= 1, questions  # one reveals the others
    if "What colour is the circle?" in questions:  # it says there is exactly one circle
      assert questions.index("What colour is the circle?") > questions.index(
          "How many circles are there?") if "How many circles are there?" in questions else True
  rec = synthetic_text.rec_dialog({"objects": [scene["objects"][0]] * 5, "word": None},
                             np.random.default_rng(0))
  assert len(rec) == synthetic_text.REC_TURNS
