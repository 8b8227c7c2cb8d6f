"""Segment Anything as SPHINX cascades it (paper §3.3.1): boxes in, one instance mask per box.

`SegmentAnything` holds a SAM checkpoint (`launch convert sam`). `masks(image, boxes)` runs the
image encoder once and decodes every box of the image in one mask-decoder call (boxes padded to
a power of two, so few shapes compile), then maps the masks back onto the original image
(`data.sam_image`). `Sphinx.segment` feeds it the boxes of SPHINX's answer.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.sam import SAM_MODEL
from sphinx_jax.configs import SamConfig
from sphinx_jax.data import sam_image
from sphinx_jax.data.image import to_rgb
from sphinx_jax.inference import grounding
from sphinx_jax.inference.language_model import load_sharded
from sphinx_jax.models.batch import power_of_two
from sphinx_jax.models.sam.sam import Sam
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Masks:
  masks: np.ndarray  # bool [n, H, W]: one per box, the original image's size
  scores: np.ndarray  # float32 [n]: SAM's predicted IoU of each mask


def read_config(ckpt_dir: str | os.PathLike) -> SamConfig:
  """A SAM checkpoint's architecture; anything else is a one-line error naming its config.json
  (so a command checks its --sam directory before loading anything)."""
  config = params_io.read_config(ckpt_dir)
  if config.get("model") != SAM_MODEL:
    raise params_io.CheckpointError(
        f"{ckpt_dir}/config.json: model {config.get('model')!r} is not a SAM model "
        "(convert one with `launch convert sam`)")
  try:
    return SamConfig.from_dict({k: v for k, v in config.items() if k != "model"})
  except (ValueError, TypeError, AttributeError) as e:
    raise params_io.CheckpointError(f"{ckpt_dir}/config.json: not a SAM config ({e})") from None


class SegmentAnything:
  def __init__(self, config: SamConfig, params, mesh: jax.sharding.Mesh | None = None):
    self.config, self.params = config, params
    self.mesh = mesh if mesh is not None else sharding.make_mesh()

  @classmethod
  def from_pretrained(cls, ckpt_dir: str | os.PathLike, *, dtype: str | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> "SegmentAnything":
    """A checkpoint written by `launch convert sam`, sharded on `mesh` (default: all devices on
    the fsdp axis), in `dtype` (default: as stored)."""
    cfg = read_config(ckpt_dir)
    if dtype is not None:
      cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    init = lambda key: Sam(cfg).init(key, np.zeros((1, cfg.image_size, cfg.image_size, 3)),
                                     boxes=np.zeros((1, 1, 4)))
    params, _ = load_sharded(ckpt_dir, init, mesh)
    return cls(cfg, params, mesh)

  def embed(self, image: Image.Image) -> tuple[np.ndarray, sam_image.SamInput]:
    """The image embedding [1, grid, grid, channels] and the preprocessed image."""
    prepared = sam_image.preprocess(image, self.config.image_size)
    rows = sharding.batch_rows(1, self.mesh)
    pixels = np.zeros((rows, *prepared.pixels.shape), np.float32)
    pixels[0] = prepared.pixels
    with sharding.use_mesh(self.mesh):
      out = _embed(self.params, sharding.put_batch(pixels, self.mesh), cfg=self.config)
      return np.asarray(multihost_utils.process_allgather(out, tiled=True)[:1]), prepared

  def masks(self, image: Image.Image, boxes: Sequence[Sequence[float]], *,
            multimask: bool = False) -> Masks:
    """One mask per box (x1, y1, x2, y2 in pixels of `image`, corners in either order).
    `multimask`: decode SAM's three candidates per box and keep the one of highest predicted
    IoU (for ambiguous prompts); by default the single-mask output, as SAM's predictor for box
    prompts."""
    boxes = np.asarray(boxes, np.float32)
    if not len(boxes):
      h, w = image.height, image.width
      return Masks(np.zeros((0, h, w), bool), np.zeros((0,), np.float32))
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
      raise UserError(f"boxes must be finite [x1, y1, x2, y2] rows, got {boxes.tolist()}")
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                            np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    embedding, prepared = self.embed(image)
    n = len(boxes)
    prompts = np.zeros((1, power_of_two(n), 4), np.float32)
    prompts[0, :n] = sam_image.boxes_to_input(boxes, prepared.original_size,
                                              prepared.resized_size)
    with sharding.use_mesh(self.mesh):
      logits, iou = _segment(self.params, embedding, prompts, cfg=self.config,
                             multimask=multimask)
    logits, iou = np.asarray(logits)[0, :n], np.asarray(iou)[0, :n]  # [n, M, h, w], [n, M]
    best = iou.argmax(-1)
    logits = logits[np.arange(n), best]
    full = sam_image.postprocess_masks(logits, prepared.original_size, prepared.resized_size,
                                       self.config.image_size)
    return Masks(np.asarray(sam_image.binarize(full)),
                 iou[np.arange(n), best].astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """SPHINX's answer, its boxes in image pixels and SAM's mask of each box."""

  answer: str
  phrases: list[str | None]  # one per box
  groups: np.ndarray  # int [n]: which grounding of the answer (`grounding.parse`) each box is in
  boxes: np.ndarray  # float32 [n, 4] x1, y1, x2, y2
  masks: np.ndarray  # bool [n, H, W]
  scores: np.ndarray  # float32 [n]: SAM's predicted IoU
  outside: int = 0  # boxes of the answer with no area inside the image, not segmented

  @property
  def message(self) -> str:
    skipped = f"; {self.outside} box(es) outside the image skipped" if self.outside else ""
    if not len(self.boxes):
      return ("the answer has no boxes, so there is nothing to segment (ask for a detection "
              f"or a referring expression){skipped}")
    return f"{len(self.boxes)} mask(s){skipped}"


def segment_answer(sam: SegmentAnything, image: Image.Image, answer: str, *,
                   multimask: bool = False) -> Segmentation:
  """Each box of `answer` (about `image`) as a SAM box prompt: the cascade of paper §3.3.1.
  Boxes are mapped onto the image and clipped to it; one left with no area is not a prompt.
  Keypoints are not boxes."""
  phrases, groups, boxes, outside = [], [], [], 0
  for group, found in enumerate(grounding.parse(answer)):
    for coords in found.coords:
      if len(coords) != 4:
        continue
      x1, y1, x2, y2 = grounding.to_image(coords, image.width, image.height)
      box = np.clip([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], 0,
                    [image.width, image.height] * 2)
      if box[2] <= box[0] or box[3] <= box[1]:
        outside += 1
        continue
      phrases.append(found.phrase)
      groups.append(group)
      boxes.append(box)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  masks = sam.masks(image, boxes, multimask=multimask)
  return Segmentation(answer, phrases, np.asarray(groups, int), boxes, masks.masks,
                      masks.scores, outside)


def overlay(image: Image.Image, segmentation: Segmentation, min_side: int = 480) -> Image.Image:
  """`image` (enlarged to `min_side` when small) with each mask tinted in the colour of its
  grounding, under everything the answer grounds (`grounding.draw`: boxes, keypoints,
  phrases)."""
  out = grounding.upscaled(to_rgb(image), min_side)
  factor = out.width // image.width
  pixels = np.asarray(out, np.float32).copy()
  for mask, group in zip(segmentation.masks, segmentation.groups):
    mask = mask.repeat(factor, 0).repeat(factor, 1)
    colour = np.asarray(grounding.PALETTE[group % len(grounding.PALETTE)], np.float32)
    pixels[mask] = 0.45 * pixels[mask] + 0.55 * colour
  return grounding.draw(Image.fromarray(pixels.round().astype(np.uint8)),
                        grounding.parse(segmentation.answer))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _embed(params, pixels, *, cfg: SamConfig):
  return Sam(cfg).apply(params, pixels, method=Sam.embed)


@functools.partial(jax.jit, static_argnames=("cfg", "multimask"))
def _segment(params, embedding, boxes, *, cfg: SamConfig, multimask: bool):
  return Sam(cfg).apply(params, embedding, boxes=boxes, multimask=multimask, method=Sam.segment)
