"""The image path of training is right, and the model learns from pixels.

- Every row of a training batch carries the images its text talks about, in order, at the slots
  its text leaves for them, and the model splices each row's own image tokens there.
- A sanity world where the answer is the whole image's colour is learned to ~100% in 150
  steps, even with random frozen towers: nothing between pixels and loss loses the image.
- After a short stage 0 on the world, a fresh LLM reading the frozen towers learns to name a
  scene's object (colour and shape) well above the majority answer, and its answer follows the
  image. (With random towers, colours are still at chance after 200 steps; this test runs 600.)
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
  params = nn.unbox(sphinx_model.init_params(cfg, jax.random.key(0), n_images=2))
  module = sphinx_model.SphinxNet(cfg)
  embeds = module.apply(params, batch["tokens"], batch["image_mask"], batch["images"],
                        method=module.embed)
  for b in range(len(embeds)):
    n = int(batch["image_mask"][b].sum()) // numbered.tokens_per_image
    own = module.apply(params, jax.tree.map(lambda x: x[b, :n], batch["images"]),
                       method=module.encode_images).reshape(-1, cfg.llm.dim)
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


def _one_object_scenes(world, split: str) -> list[dict]:
  """The split's scenes with a single object, as captions naming it ("red circle")."""
  scenes = [json.loads(line) for line in (world / split / "scenes.jsonl").read_text().splitlines()]
  return [{"image": s["image"], "caption": f"{o['colour']} {o['shape']}"}
          for s in scenes if len(s["objects"]) == 1 for o in s["objects"]]


def test_stage0_towers_let_a_fresh_llm_name_colour_and_shape(tmp_path):
  """Stage 0 (60 steps) then 600 steps of a fresh mini LLM on one-object scenes, the answer
  right after the image as in stage 1. Measured on this machine (35 held-out one-object scenes
  of a 150-scene split): colour 1.0, shape 0.74 (majority 0.37); with random towers colour 0.26
  after 200 steps, and 1.0 / 0.57 after 600.
  The same questions in the chat template, where ~45 template tokens sit between image and
  answer, stay near the majority after 600 steps: reading across them is what stage 1 teaches
  the default."""
  world = tmp_path / "world"
  synthetic.write_world(world, 1200, 600, seed=0)
  tokenizer = str(world / "tokenizer.model")
  stage0 = towers.TowersConfig(
      workdir=str(tmp_path / "stage0"), model="mini", steps=60,
      optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=20, weight_decay=0.05),
      data=PairsConfig(tokenizer=tokenizer, sources=(synthetic.sources(world)["towers"],),
                       text_len=56, negatives=2, batch_size=64, threads=2))
  net, trained = towers.pretrain(stage0)
  towers.export(stage0, net.cfg, trained)
  train_set = fx.write_jsonl(tmp_path / "named.jsonl", _one_object_scenes(world, "train"))
  train(Experiment(
      str(tmp_path / "run"),
      TrainConfig(model="mini", init_from=str(towers.export_dir(stage0)), steps=600, log_every=50,
                  checkpoint_every=1000, mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                  optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, weight_decay=0.0)),
      pipeline.DataConfig(tokenizer=tokenizer,
                          sources=(sources.Captions(str(train_set),
                                                    image_root=str(world / "train")),),
                          view_plan="mini", tokens_per_image=sphinx_preset("mini").image_tokens,
                          seq_len=40, batch_size=16, threads=2)))
  model = Sphinx.from_pretrained(tmp_path / "run" / "params_step600")
  held_out = _one_object_scenes(world, "eval")

  def named(image: str) -> list[str]:
    with Image.open(world / "eval" / image) as im:
      pixels = model.preprocess(im.convert("RGB"))
    ids = model.generate_ids(pixels, [model.tokenizer.bos_id], max_new_tokens=6)
    return model.tokenizer.decode(ids).split()[:2]

  answers = [named(r["image"]) for r in held_out]
  truth = [r["caption"].split() for r in held_out]
  for k, kind in enumerate(("colour", "shape")):
    accuracy = np.mean([a[k:k + 1] == t[k:k + 1] for a, t in zip(answers, truth)])
    majority = max(np.mean([t[k] == v for t in truth]) for v in {t[k] for t in truth})
    assert accuracy >= majority + (0.5 if kind == "colour" else 0.2), (kind, accuracy, majority)
  swapped = [named(r["image"]) for r in held_out[1:] + held_out[:1]]
  assert np.mean([a != b for a, b in zip(answers, swapped)]) >= 0.5
