"""The image path of training is right, and the model learns from pixels.

- Every row of a training batch carries the images its text talks about, in order, at the slots
  its text leaves for them, and the model splices each row's own image tokens there.
- A sanity world where the answer is the whole image's colour is learned to ~100% in 150
  steps, even with random frozen towers: nothing between pixels and loss loses the image.
- After a short stage 0 on the world, a fresh LLM reading the frozen towers learns to answer
  colour and shape questions about multi-object scenes in the chat template well above the
  majority answer, and its answers follow the image.
"""
import json
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
from PIL import Image

from sphinx_jax.configs import sphinx_preset
from sphinx_jax.data import pipeline, sources, synthetic, synthetic_scenes, tasks, templates
from sphinx_jax.data.pairs import PairsConfig
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.eval.runner import evaluate
from sphinx_jax.inference.sphinx_model import Sphinx
from sphinx_jax.models import sphinx as sphinx_model
from sphinx_jax.recipe import synthetic_benchmarks
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig
from sphinx_jax.train import towers
from sphinx_jax.train.loop import train
from tests import data_fixtures as fx

MODEL = sphinx_preset("tiny")


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
  """Images of distinct colours, and three sources naming them: one image after BOS, two images
  at two markers (in-context layout), two images under one marker (a pair after BOS)."""
  d = tmp_path_factory.mktemp("numbered")
  for i in range(12):
    (d / f"{i}.png").write_bytes(fx.png(fx.gray(i), size=(10, 7)))
  one = [{"image": f"{i}.png", "conversations": [
      {"from": "human", "value": "<image>\nWhich image?"}, {"from": "gpt", "value": f"image {i}"}]}
      for i in range(12)]
  two = [{"image": [f"{i}.png", f"{(i + 5) % 12}.png"], "conversations": [
      {"from": "human", "value": "<image> Which? "}, {"from": "gpt", "value": f"image {i}"},
      {"from": "human", "value": "<image> And this? "},
      {"from": "gpt", "value": f"image {(i + 5) % 12}"}]} for i in range(12)]
  pair = [{"image": [f"{i}.png", f"{(i + 7) % 12}.png"], "conversations": [
      {"from": "human", "value": "<image>\nWhich two?"},
      {"from": "gpt", "value": f"image {i} then image {(i + 7) % 12}"}]} for i in range(12)]
  specs = tuple(sources.Conversations(str(fx.write_jsonl(d / f"{n}.jsonl", r)), str(d))
                for n, r in (("one", one), ("two", two), ("pair", pair)))
  return pipeline.DataConfig(tokenizer=str(fx.tokenizer(d / "tok")), sources=specs,
                             view_plan="tiny", tokens_per_image=MODEL.image_tokens, seq_len=256,
                             max_images=2, batch_size=8, seed=1, threads=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """(start, length) of each run of True."""
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
  return list(zip(edges[::2], edges[1::2] - edges[::2]))


def test_each_row_carries_its_own_images_in_order(numbered):
  tok = Tokenizer(numbered.tokenizer)
  k = numbered.tokens_per_image
  rows, data = 0, iter(pipeline.batches(numbered, SkipLog()))
  for batch in (next(data) for _ in range(4)):
    for b in range(len(batch["tokens"])):
      valid, mask = batch["valid"][b], batch["image_mask"][b]
      text = tok.decode(batch["tokens"][b][valid & ~mask].tolist())
      named = [int(n) for n in re.findall(r"image (\d+)", text)]
      n_images = int(mask.sum()) // k
      seen = [_index(batch["images"]["vit"][b, j]) for j in range(n_images)]
      assert seen == named, (text, seen)
      blocks = _runs(mask)
      assert sum(n for _, n in blocks) == n_images * k
      if "And this?" not in text:  # one marker: every image right after BOS, as the reference
        assert blocks == [(1, n_images * k)]
      else:  # each image at the marker opening its question
        assert [n for _, n in blocks] == [k, k] and blocks[0][0] > 1
      rows += 1
  assert rows == 32


def _index(views: np.ndarray) -> int:
  """Which numbered image a view stack shows (its solid colour is fx.gray(i))."""
  colour = fx.image_colour(views)
  return min(range(12), key=lambda i: sum(abs(a - b) for a, b in zip(colour, fx.gray(i))))


def test_the_model_splices_each_rows_images_at_its_slots(numbered):
  batch = next(iter(pipeline.batches(numbered, SkipLog())))
  cfg = MODEL
  params = jax.jit(lambda k: nn.unbox(sphinx_model.init_params(cfg, k, n_images=2)))(
      jax.random.key(0))
  module = sphinx_model.SphinxNet(cfg)
  embed = jax.jit(lambda p, *a: module.apply(p, *a, method=module.embed))
  encode = jax.jit(lambda p, images: module.apply(p, images, method=module.encode_images))
  embeds = embed(params, batch["tokens"], batch["image_mask"], batch["images"])
  for b in range(len(embeds)):
    n = int(batch["image_mask"][b].sum()) // numbered.tokens_per_image
    own = encode(params, jax.tree.map(lambda x: x[b, :n], batch["images"])).reshape(
        -1, cfg.llm.dim)
    np.testing.assert_allclose(embeds[b][batch["image_mask"][b]], own, atol=1e-5)


@pytest.fixture(scope="module")
def one_colour_world(tmp_path_factory):
  """Images that are one colour all over, asked "What colour is the image?"."""
  root = tmp_path_factory.mktemp("sanity")
  rng = np.random.default_rng(0)
  names = list(synthetic_scenes.COLOURS)
  texts = []
  for split, n in (("train", 256), ("eval", 64)):
    (root / split / "images").mkdir(parents=True)
    records = []
    for i in range(n):
      colour = names[int(rng.integers(len(names)))]
      Image.new("RGB", synthetic_scenes.IMAGE_SIZE, synthetic_scenes.COLOURS[colour]).save(
          root / split / "images" / f"{i}.png")
      records.append({"image": f"images/{i}.png", "question": "What colour is the image?",
                      "answer": colour, "type": "colour"})
    (root / split / "vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    texts += [templates.conversation_prompt(tasks.vqa(r, synthetic_scenes.IMAGE_SIZE))
              for r in records]
  synthetic.train_tokenizer(texts * 4, root / "tokenizer.model")
  return root


def test_whole_image_colour_is_learned_with_random_towers(one_colour_world, tmp_path):
  root = one_colour_world
  exp = Experiment(
      str(tmp_path / "run"),
      TrainConfig(model="tiny", steps=150, log_every=10, checkpoint_every=1000,
                  mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                  optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, weight_decay=0.0)),
      pipeline.DataConfig(tokenizer=str(root / "tokenizer.model"),
                          sources=(sources.Task(str(root / "train" / "vqa.jsonl"), "vqa",
                                                image_root=str(root / "train")),),
                          view_plan="tiny", tokens_per_image=MODEL.image_tokens, seq_len=80,
                          batch_size=16, threads=1))
  train(exp)
  model = Sphinx.from_pretrained(tmp_path / "run" / "params_step150")
  synthetic_benchmarks.register()
  summary = evaluate(model, "synthetic_vqa", root, tmp_path / "eval", batch_size=64,
                     progress=False)
  assert summary["per_answer_type"]["colour"] >= 95.0, summary


def _colour_and_shape_questions(world, split: str) -> list[dict]:
  """The split's VQA questions that bind a colour to a shape ("What colour is the circle?",
  "What shape is the red object?"), in scenes of one to four things."""
  records = [json.loads(line) for line in (world / split / "vqa.jsonl").read_text().splitlines()]
  return [r for r in records if r["type"] in ("colour", "shape")]


def test_stage0_towers_let_a_fresh_llm_answer_colour_and_shape_questions(tmp_path):
  """Stage 0 (10 steps), then 400 steps of a fresh mini LLM on the world's colour and shape
  questions in the chat template, as stage 2 asks them, asked on 150 held-out scenes. Measured on
  this machine with 60 stage-0 steps (on 300 held-out scenes, 260 colour / 279 shape questions):
  colour 0.74 (majority 0.28), shape 0.84 (majority 0.36), 0.70 of the answers change when the
  image is swapped. Random frozen towers do as well on this geometry (0.80 / 0.81): the LLM
  initialisation and the stage-0 export feeding stage 2, not stage 0's learning, are what this
  test guards (stage 0's own learning is not asserted); with LLaMA's std 0.02 it fails
  (colour 0.53 after the same 400 steps, bound 0.58)."""
  world = tmp_path / "world"
  synthetic.write_world(world, 1200, 150, seed=0)
  tokenizer = str(world / "tokenizer.model")
  stage0 = towers.TowersConfig(
      workdir=str(tmp_path / "stage0"), model="mini", steps=10,
      optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=3, weight_decay=0.05),
      data=PairsConfig(tokenizer=tokenizer, sources=(synthetic.sources(world)["towers"],),
                       text_len=56, negatives=2, batch_size=64, threads=2))
  net, trained = towers.pretrain(stage0)
  towers.export(stage0, net.cfg, trained)
  train_set = fx.write_jsonl(tmp_path / "qa.jsonl", _colour_and_shape_questions(world, "train"))
  train(Experiment(
      str(tmp_path / "run"),
      TrainConfig(model="mini", init_from=str(towers.export_dir(stage0)), steps=400, log_every=50,
                  checkpoint_every=1000, mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                  optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.0)),
      pipeline.DataConfig(tokenizer=tokenizer,
                          sources=(sources.Task(str(train_set), "vqa",
                                                image_root=str(world / "train")),),
                          seq_len=112, batch_size=16, threads=2)))
  model = Sphinx.from_pretrained(tmp_path / "run" / "params_step400")
  held_out = _colour_and_shape_questions(world, "eval")

  def answer(records: list[dict], images: list[str]) -> list[str]:
    """Batched chat turns, 64 at a time (`Sphinx.chat_batch`, equal to `chat` greedily)."""
    out = []
    for i in range(0, len(records), 64):
      pictures = []
      for image in images[i:i + 64]:
        with Image.open(world / "eval" / image) as im:
          pictures.append(im.convert("RGB"))
      out += model.chat_batch(pictures, [f"{r['question']}\n{tasks.VQA}"
                                         for r in records[i:i + 64]], max_new_tokens=4)
    return out

  answers = answer(held_out, [r["image"] for r in held_out])
  for kind in ("colour", "shape"):
    rows = [(a, r["answer"]) for a, r in zip(answers, held_out) if r["type"] == kind]
    accuracy = np.mean([a == truth for a, truth in rows])
    truths = [truth for _, truth in rows]
    majority = max(truths.count(v) for v in set(truths)) / len(truths)
    assert accuracy >= majority + 0.3, (kind, accuracy, majority)
  images = sorted({r["image"] for r in held_out})
  other = dict(zip(images, images[1:] + images[:1]))  # another scene for every image
  swapped = answer(held_out, [other[r["image"]] for r in held_out])
  assert np.mean([a != b for a, b in zip(answers, swapped)]) >= 0.5
