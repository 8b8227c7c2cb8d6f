"""Image-text pairs for the towers' own pre-training (train/towers.py, the embedded default's
stage 0): caption records -> {global views, a DINOv2 view pair, caption and hard-negative
caption tokens}, batched.

Views are made exactly as SPHINX's samples make them (sample.views) under a sub-image plan, so
the towers are pre-trained on the pixels they will later see: view 0 (the global view) goes to
the text-aligned towers with the caption, and DINOv2 gets a pair: the global view and a random
view of the plan (a sub-image crop, or the global view again), each shifted by up to `shift`
pixels (edge padding). All of it is host work, in grain's reading threads.

Hard negatives (NegCLIP): captions of the image with one thing changed. Without them a batch of
random scenes is told apart by its colours alone, and the towers never have to see shapes.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import grain
import numpy as np
from PIL import Image

from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.pipeline import mixture
from sphinx_jax.data.records import load_image
from sphinx_jax.data.sample import views
from sphinx_jax.data.skips import BadRecord, SkipLog
from sphinx_jax.data.sources import _FileSpec, open_file
from sphinx_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Pair:
  image: Image.Image
  caption: str
  negatives: tuple[str, ...]
  file: str
  record: str


@dataclasses.dataclass(frozen=True)
class Pairs(_FileSpec):
  """Image-caption records (JSON/JSONL/CSV/parquet) with optional hard negatives: a list of
  captions that do not describe the image (`negatives_key`)."""

  path: str
  image_root: str = ""
  image_key: str = "image"
  caption_key: str = "caption"
  negatives_key: str = "negatives"
  name: str = ""

  def open(self):
    return open_file(self.label, self.path, self._example)

  def _example(self, r: dict, file, rid: str) -> Pair:
    caption = r[self.caption_key]
    negatives = r.get(self.negatives_key) or []
    if not isinstance(caption, str) or not caption.strip():
      raise BadRecord(file, rid, f"{self.caption_key!r} is not a non-empty string")
    if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
      raise BadRecord(file, rid, f"{self.negatives_key!r} is not a list of strings")
    image = load_image(Path(self.image_root) / r[self.image_key], file, rid)
    return Pair(image, caption.strip(), tuple(negatives), str(file), rid)


@dataclasses.dataclass(frozen=True)
class PairsConfig:
  """`sources`: Pairs specs; `view_plan`: a plan with sub-images; `negatives`: hard negatives
  per image (a record's own, repeated when it has fewer; 0: none)."""

  tokenizer: str
  sources: tuple = ()
  weights: tuple[float, ...] | None = None
  view_plan: str = "mini_1k"
  text_len: int = 96
  negatives: int = 3
  batch_size: int = 64
  shift: int = 3
  seed: int = 0
  strict: bool = False
  threads: int = 2

  def __post_init__(self):
    if not self.sources:
      raise ValueError("PairsConfig needs at least one source")
    if self.view_plan not in VIEW_PLANS:
      raise ValueError(f"unknown view plan {self.view_plan!r}; known: {', '.join(VIEW_PLANS)}")


def encode_texts(texts, tok: Tokenizer, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n, length], valid [n, length]): BOS text EOS per text, cut at `length`, zero-padded."""
  out, valid = np.zeros((len(texts), length), np.int32), np.zeros((len(texts), length), bool)
  for i, text in enumerate(texts):
    ids = tok.encode(text, bos=True, eos=True)[:length]
    out[i, :len(ids)], valid[i, :len(ids)] = ids, True
  return out, valid


def _pair(pair: Pair, source_id: int, tok: Tokenizer, config: PairsConfig) -> dict:
  if config.negatives and not pair.negatives:
    raise BadRecord(pair.file, pair.record, "no hard negatives")
  negatives = [pair.negatives[i % len(pair.negatives)] for i in range(config.negatives)]
  stacks = views([pair.image], VIEW_PLANS[config.view_plan])
  text, valid = encode_texts([pair.caption] + negatives, tok, config.text_len)
  return {"vit_views": stacks["vit"][0], "convnext": stacks["convnext"][0, 0], "text": text[0],
          "text_valid": valid[0], "negatives": text[1:], "negatives_valid": valid[1:]}


def _shifted(view: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
  dy, dx = rng.integers(-shift, shift + 1, size=2)
  padded = np.pad(view, ((shift, shift), (shift, shift), (0, 0)), mode="edge")
  h, w = view.shape[:2]
  return padded[shift + dy:shift + dy + h, shift + dx:shift + dx + w]


def _augment(pair: dict, rng: np.random.Generator, shift: int) -> dict:
  """The global view for the text towers; (shifted global, shifted random view) for DINOv2."""
  stack = pair.pop("vit_views")
  other = stack[rng.integers(len(stack))]
  pair["vit"] = stack[0]
  pair["dino"] = np.stack([_shifted(stack[0], shift, rng), _shifted(other, shift, rng)])
  return pair


def batches(config: PairsConfig, skips: SkipLog) -> grain.IterDataset:
  """Endless batches {'vit' [B, s, s, 3], 'convnext' [B, t, t, 3], 'dino' [B, 2, s, s, 3],
  'text' int32 [B, L], 'text_valid' [B, L], 'negatives' [B, K, L], 'negatives_valid'}; bad
  records skipped and counted in `skips`."""
  tok = Tokenizer(config.tokenizer)
  pairs = mixture(config.sources, config.weights,
                  functools.partial(_pair, tok=tok, config=config), config, skips)
  return pairs.random_map(functools.partial(_augment, shift=config.shift),
                          seed=config.seed).batch(config.batch_size)
