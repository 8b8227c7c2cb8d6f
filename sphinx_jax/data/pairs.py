"""Image-text pairs for the towers' own pre-training (train/towers.py, the embedded default's
stage 0): caption records -> {views, caption, hard-negative and grounded-phrase tokens}, batched.

Views are made exactly as SPHINX's samples make them (sample.views) under a sub-image plan, so
the towers are pre-trained on the pixels they will later see. Per image: the global view (with
the caption, for the text-aligned towers), a random sub-image crop (with the global view, for
the grounded phrases inside each), and the two shifted by up to `shift` pixels (edge padding)
as DINOv2's pair. All of it is host work: records are read and squared in grain's threads, the
views of a whole batch made in one compiled call.

Hard negatives (NegCLIP): captions of the image with one thing changed. Without them a batch of
random scenes is told apart by its colours alone, and the towers never have to see shapes.
Grounded phrases (GLIP's region-word contrast): each object's phrase against the patch tokens
its box covers, so the tokens the LLM reads are taught what is at their place.
"""
from __future__ import annotations

import dataclasses
import functools

import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sphinx_jax.data.image import VIEW_PLANS, ViewPlan, make_views, normalize, square
from sphinx_jax.data.pipeline import mixture
from sphinx_jax.data.records import record_image
from sphinx_jax.data.skips import BadRecord, SkipLog
from sphinx_jax.data.sources import _FileSpec, image_file, open_file
from sphinx_jax.data.tasks import normalise
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Pair:
  image: Image.Image
  caption: str
  negatives: tuple[str, ...]
  regions: tuple[tuple[str, tuple[float, ...]], ...]  # (phrase, pixel box)
  file: str
  record: str


@dataclasses.dataclass(frozen=True)
class Pairs(_FileSpec):
  """Image-caption records (JSON/JSONL/CSV/parquet) with optional hard negatives, a list of
  captions that do not describe the image (`negatives_key`), and optional grounded phrases,
  a list of {"phrase", "box": [x1, y1, x2, y2] in pixels} (`regions_key`). Image paths stay in
  `image_root` unless `allow_outside_root` (see data.sources)."""

  path: str
  image_root: str = ""
  image_key: str = "image"
  caption_key: str = "caption"
  negatives_key: str = "negatives"
  regions_key: str = "regions"
  name: str = ""
  allow_outside_root: bool = False

  def open(self):
    return open_file(self.label, self.path, self._example)

  def _example(self, r: dict, file, rid: str) -> Pair:
    caption = r[self.caption_key]
    negatives = r.get(self.negatives_key) or []
    if not isinstance(caption, str) or not caption.strip():
      raise BadRecord(file, rid, f"{self.caption_key!r} is not a non-empty string")
    if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
      raise BadRecord(file, rid, f"{self.negatives_key!r} is not a list of strings")
    regions = []
    for region in r.get(self.regions_key) or []:
      phrase, box = region["phrase"], region["box"]
      if not isinstance(phrase, str) or len(box) != 4:
        raise BadRecord(file, rid, f"region {region!r} is not a phrase and 4 box numbers")
      regions.append((phrase, tuple(float(v) for v in box)))
    path = image_file(self.image_root, r[self.image_key], self.allow_outside_root, file, rid)
    image = record_image(path, file, rid)
    return Pair(image, caption.strip(), tuple(negatives), tuple(regions), str(file), rid)


@dataclasses.dataclass(frozen=True)
class PairsConfig:
  """`sources`: Pairs specs; `view_plan`: a plan with sub-images; `negatives`: hard negatives
  per image (a record's own, repeated when it has fewer; 0: none); `regions` grounded phrases
  per image at most (padded; a record's extra ones are dropped), `phrase_len` their tokens."""

  tokenizer: str
  sources: tuple = ()
  weights: tuple[float, ...] | None = None
  view_plan: str = "mini_1k"
  text_len: int = 96
  negatives: int = 3
  regions: int = 5
  phrase_len: int = 8
  batch_size: int = 64
  shift: int = 3
  seed: int = 0
  strict: bool = False
  threads: int = 2

  def __post_init__(self):
    if not self.sources:
      raise UserError("PairsConfig needs at least one source")
    if self.view_plan not in VIEW_PLANS:
      raise UserError(f"unknown view plan {self.view_plan!r}; known: {', '.join(VIEW_PLANS)}")
    if VIEW_PLANS[self.view_plan].num_views < 2:
      raise UserError(f"view plan {self.view_plan!r} has no sub-images")


def encode_texts(texts, tok: Tokenizer, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids [n, length], valid [n, length]): BOS text EOS per text, cut at `length`, zero-padded."""
  out, valid = np.zeros((len(texts), length), np.int32), np.zeros((len(texts), length), bool)
  for i, text in enumerate(texts):
    ids = tok.encode(text, bos=True, eos=True)[:length]
    out[i, :len(ids)], valid[i, :len(ids)] = ids, True
  return out, valid


def _pair(pair: Pair, source_id: int, tok: Tokenizer, config: PairsConfig) -> dict:
  """One record: its padded, resized square (uint8), its texts' tokens, its grounded phrases
  (boxes as fractions of the padded square)."""
  if config.negatives and not pair.negatives:
    raise BadRecord(pair.file, pair.record, "no hard negatives")
  negatives = [pair.negatives[i % len(pair.negatives)] for i in range(config.negatives)]
  text, valid = encode_texts([pair.caption] + negatives, tok, config.text_len)
  regions = pair.regions[:config.regions]
  phrases, phrases_valid = encode_texts([p for p, _ in regions] + [""] * (config.regions
                                        - len(regions)), tok, config.phrase_len)
  boxes = np.zeros((config.regions, 4), np.float32)
  try:
    for i, (_, box) in enumerate(regions):
      boxes[i] = normalise(box, pair.image.size)
  except ValueError as e:
    raise BadRecord(pair.file, pair.record, str(e)) from None
  return {"square": square(pair.image, VIEW_PLANS[config.view_plan].image_size), "text": text[0],
          "text_valid": valid[0], "negatives": text[1:], "negatives_valid": valid[1:],
          "phrases": phrases, "phrases_valid": phrases_valid, "boxes": boxes,
          "region_valid": np.arange(config.regions) < len(regions)}


def crop_boxes(boxes: np.ndarray, plan: ViewPlan, view: np.ndarray) -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """Boxes [n, R, 4] (fractions of the square) in the coordinates of each row's `view` of the
  plan (0: the global view; v >= 1: the (v - 1)-th row-major crop), clipped to it; and whether
  at least half of each box lies inside that view."""
  tiles = plan.vit.tiled_from // plan.vit.side
  index = np.maximum(view - 1, 0)
  origin = np.stack([index % tiles, index // tiles], axis=-1) / tiles  # (x, y) of each crop
  scale = np.where(view > 0, tiles, 1)[:, None, None]
  origin = np.where((view > 0)[:, None], origin, 0.0)[:, None, :]
  moved = (boxes - np.concatenate([origin, origin], axis=-1)) * scale
  clipped = np.clip(moved, 0.0, 1.0)
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
  inside = area(clipped) >= 0.5 * np.maximum(area(moved), 1e-9)
  return clipped.astype(np.float32), inside


# uint8 -> normalised float32, exactly `image.normalize`, as a table the compiled views index.
_NORMALIZED = normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))


@functools.partial(jax.jit, static_argnums=2)
def _global_and_crop(squares: jax.Array, crop: jax.Array, plan: ViewPlan) -> dict:
  """uint8 squares [n, S, S, 3] -> each tower's (global view, view `crop`) [n, 2, ...]."""
  pixels = jnp.asarray(_NORMALIZED)[squares.astype(jnp.int32), jnp.arange(3)]
  rows = jnp.arange(squares.shape[0])
  return {k: jnp.stack([v[:, 0], v[rows, crop]], axis=1)
          for k, v in make_views(pixels, plan).items()}


def _views(batch: dict, rng: np.random.Generator, plan: ViewPlan, shift: int) -> dict:
  """A batch's views, in one host call. Per row: the global view and a random sub-image crop
  for the text towers (the crop's boxes moved into it), and those two, shifted, for DINOv2."""
  squares = batch.pop("square")
  n = len(squares)
  crop = rng.integers(1, plan.num_views, size=n)
  cpu = jax.local_devices(backend="cpu")[0]  # this host's work, never on an accelerator
  views = {k: np.asarray(v) for k, v in _global_and_crop(
      jax.device_put(squares, cpu), jax.device_put(crop, cpu), plan).items()}
  pairs, h, w = views["vit"], views["vit"].shape[2], views["vit"].shape[3]
  padded = np.pad(pairs, ((0, 0), (0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
  dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n, 2))
  dino = np.stack([[padded[i, j, dy[i, j]:dy[i, j] + h, dx[i, j]:dx[i, j] + w] for j in range(2)]
                   for i in range(n)])
  boxes, inside = crop_boxes(batch["boxes"], plan, crop)
  return {**batch, "vit": pairs, "convnext": views["convnext"],
          "dino": dino, "boxes": np.stack([batch["boxes"], boxes], axis=1),
          "region_valid": np.stack([batch["region_valid"], batch["region_valid"] & inside], 1)}


def batches(config: PairsConfig, skips: SkipLog) -> grain.IterDataset:
  """Endless batches: 'vit' [B, 2, s, s, 3] and 'convnext' [B, 2, t, t, 3] (global view, a
  crop), 'dino' [B, 2, s, s, 3], 'text' int32 [B, L], 'text_valid', 'negatives' [B, K, L],
  'negatives_valid', 'phrases' [B, R, P], 'phrases_valid', 'boxes' [B, 2, R, 4] (in each view),
  'region_valid' [B, 2, R]; bad records skipped and counted in `skips`."""
  tok = Tokenizer(config.tokenizer)
  pairs = mixture(config.sources, config.weights,
                  functools.partial(_pair, tok=tok, config=config), config, skips)
  return pairs.batch(config.batch_size).random_map(
      functools.partial(_views, plan=VIEW_PLANS[config.view_plan], shift=config.shift),
      seed=config.seed)
