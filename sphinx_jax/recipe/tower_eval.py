"""What the pre-trained towers see, measured on the synthetic world's held-out scenes before any
LLM is trained (the embedded default's stage 0 report).

- Text-aligned towers (CLIP ViT, ConvNeXt, BLIP-2 Q-Former): zero-shot by text retrieval. For
  each held-out scene and each kind (colour, shape, count, word, position), the candidates are
  the scene's tags (`synthetic_text.tags`, the towers' pre-training text) and those of scenes differing in one thing of that kind
  (`synthetic_text.alternatives`); a hit when the true caption is the most similar. Chance is
  1 / candidates (reported as `chance`).
- DINOv2 (self-supervised, no text): k-nearest-neighbour accuracy against the training split's
  embeddings, on held-out one-object scenes (colour, shape) and on all scenes (object count).
"""
from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from sphinx_jax.data import synthetic_text
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.pairs import encode_texts
from sphinx_jax.data.sample import views
from sphinx_jax.data.tokenizer import Tokenizer

KINDS = ("colour", "shape", "count", "word", "position")
K_NEIGHBOURS = 10


def scenes(world: Path, split: str, limit: int | None = None) -> list[dict]:
  lines = (Path(world) / split / "scenes.jsonl").read_text().splitlines()[:limit]
  return [json.loads(line) for line in lines]


def _views(world: Path, split: str, records: list[dict], plan: str) -> dict[str, np.ndarray]:
  """Global views of each scene's image (view 0 of `plan`), {'vit': [n, ...], 'convnext'}."""
  out = []
  for r in records:
    with Image.open(Path(world) / split / r["image"]) as image:
      out.append(views([image], VIEW_PLANS[plan]))  # views scale 16-bit
  return {k: np.concatenate([o[k][:, 0] for o in out]) for k in out[0]}


def _batched(fn, arrays, size: int = 256) -> np.ndarray:
  """fn over row chunks of every array in `arrays` (a tuple), results concatenated."""
  n = len(arrays[0])
  return jax.tree.map(lambda *xs: np.concatenate(xs),
                      *[jax.device_get(fn(*(a[i:i + size] for a in arrays)))
                        for i in range(0, n, size)])


def zero_shot(net, params, world: Path, tokenizer: Tokenizer, plan: str, text_len: int,
              seed: int = 0, limit: int | None = None) -> dict:
  """{tower: {kind: accuracy}} with `chance` per kind (see the module doc)."""
  held = scenes(world, "eval", limit)
  pixels = _views(world, "eval", held, plan)
  # params as an argument, not a closure: a closed-over array would be a constant of the program
  image_fn = functools.partial(jax.jit(
      lambda p, v, c: net.apply(p, v, c, method=type(net).image_embeddings)), params)
  text_fn = functools.partial(jax.jit(
      lambda p, t, m: net.apply(p, t, m, method=type(net).text_embeddings)), params)
  images = _batched(image_fn, (pixels["vit"], pixels["convnext"]))
  rng = np.random.default_rng(seed)
  results = {name: {} for name in images}
  chance = {}
  for kind in KINDS:
    groups = [(i, [synthetic_text.tags(s)] + synthetic_text.alternatives(s, kind, rng))
              for i, s in enumerate(held)]
    groups = [(i, texts) for i, texts in groups if len(texts) > 1]
    flat = [t for _, texts in groups for t in texts]
    tokens, valid = encode_texts(flat, tokenizer, text_len)
    texts = _batched(text_fn, (tokens, valid))
    chance[kind] = float(np.mean([1 / len(t) for _, t in groups]))
    for name in images:
      hits, start = [], 0
      for i, candidates in groups:
        sims = texts[name][start:start + len(candidates)] @ images[name][i]
        hits.append(int(np.argmax(sims)) == 0)
        start += len(candidates)
      results[name][kind] = float(np.mean(hits))
  return {**results, "chance": chance, "scenes": len(held)}


def _labels(records: list[dict]) -> dict[str, list]:
  one = [len(r["objects"]) == 1 for r in records]
  return {"colour": [r["objects"][0]["colour"] if o else None for r, o in zip(records, one)],
          "shape": [r["objects"][0]["shape"] if o else None for r, o in zip(records, one)],
          "count": [len(r["objects"]) for r in records]}


def knn(net, params, world: Path, plan: str, limit: int | None = None, bank: int = 2000) -> dict:
  """DINOv2's k-NN accuracy per label (colour and shape of one-object scenes, object count)
  against the first `bank` training scenes, with the majority label's accuracy as `chance`."""
  train, held = scenes(world, "train", min(bank, limit or bank)), scenes(world, "eval", limit)
  fn = functools.partial(jax.jit(lambda p, v: net.apply(p, v, method=type(net).dino_embeddings)),
                         params)
  bank = _batched(fn, (_views(world, "train", train, plan)["vit"],))
  query = _batched(fn, (_views(world, "eval", held, plan)["vit"],))
  train_labels, held_labels = _labels(train), _labels(held)
  out, chance = {}, {}
  for kind in train_labels:
    known = [i for i, v in enumerate(train_labels[kind]) if v is not None]
    asked = [i for i, v in enumerate(held_labels[kind]) if v is not None]
    labels = np.asarray([train_labels[kind][i] for i in known])
    nearest = np.argsort(-(query[asked] @ bank[known].T), axis=1)[:, :K_NEIGHBOURS]
    guesses = [Counter(labels[row]).most_common(1)[0][0] for row in nearest]
    truths = [held_labels[kind][i] for i in asked]
    majority = Counter(labels.tolist()).most_common(1)[0][0]
    out[kind] = float(np.mean([g == t for g, t in zip(guesses, truths)]))
    chance[kind] = float(np.mean([t == majority for t in truths]))
  return {"dinov2": out, "chance": chance}
