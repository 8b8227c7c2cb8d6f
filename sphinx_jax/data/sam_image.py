"""Segment Anything's own image and prompt preprocessing and mask postprocessing, host side.

Exact to HF transformers' `SamImageProcessorPil` / `SamProcessor` (and the official
segment_anything `ResizeLongestSide`): PIL bilinear resize of the longest side, /255, ImageNet
statistics, zero padding bottom/right *after* normalisation; prompts scaled into the resized frame;
mask logits resized as torch's `F.interpolate(mode='bilinear', align_corners=False)`.

That resize is `jax.image.resize(..., 'bilinear', antialias=False)`: its renormalised triangle
kernel equals torch's clamped source coordinates at the edges, downsampling included. It rounds
differently (a few float32 ulps, measured <= 7.2e-7 against torch's CPU kernels, which
themselves differ by thread count), so only a pixel whose logit is within ulps of the threshold
could binarise differently; none did in the tests. Decision: no emulation of torch's kernel
order, which would tie exactness to one torch build and thread count.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sphinx_jax.data.image import to_rgb

SAM_SIZE = 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the processor's defaults (segment_anything: x255)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_shape(height: int, width: int, longest: int = SAM_SIZE) -> tuple[int, int]:
  """(h, w) with the longest side `longest`: `ResizeLongestSide.get_preprocess_shape`."""
  scale = longest * 1.0 / max(height, width)
  # at least one pixel: a 1 x 5000 image would round to 0 rows
  return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclasses.dataclass(frozen=True)
class SamInput:
  """An image as SAM's encoder sees it, with the sizes that prompts and masks are mapped by."""
  pixels: np.ndarray  # float32 [size, size, 3], normalised, zero-padded bottom/right
  original_size: tuple[int, int]  # (h, w) of the image given
  resized_size: tuple[int, int]  # (h, w) of the image inside `pixels`


def normalize(pixels: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32 as HF: x * (1/255) in float64, then ImageNet stats in float32."""
  scaled = (np.asarray(pixels).astype(np.float64) * (1 / 255)).astype(np.float32)
  return (scaled - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def preprocess(image: Image.Image, size: int = SAM_SIZE) -> SamInput:
  """A PIL image -> SamInput: longest side `size` (PIL bilinear), normalised, padded to a square.

  Alpha is dropped (`to_rgb`), as segment_anything, which takes RGB arrays; HF composites it onto
  white instead, so only RGB images match HF exactly.
  """
  image = to_rgb(image)
  original = (image.height, image.width)
  resized = resized_shape(*original, longest=size)
  if resized != original:
    image = image.resize(resized[::-1], Image.Resampling.BILINEAR)
  pixels = normalize(np.asarray(image, np.uint8))
  pixels = np.pad(pixels, ((0, size - resized[0]), (0, size - resized[1]), (0, 0)))
  return SamInput(pixels, original, resized)


def _scale_xy(coords: np.ndarray, original_size, resized_size) -> np.ndarray:
  """float64 [..., 2] (x, y) -> float32 in the resized frame, as HF's `_normalize_coordinates`."""
  (old_h, old_w), (new_h, new_w) = original_size, resized_size
  coords = coords * np.array([new_w / old_w, new_h / old_h])
  return coords.astype(np.float32)


def points_to_input(points, original_size, resized_size) -> np.ndarray:
  """Points [..., 2] (x, y) in original-image pixels -> float32 in the frame SAM sees."""
  return _scale_xy(np.asarray(points, np.float64), original_size, resized_size)


def boxes_to_input(boxes, original_size, resized_size) -> np.ndarray:
  """Boxes [..., 4] (x1, y1, x2, y2) in original-image pixels -> float32 in the frame SAM sees.

  Through float32 first, as `SamProcessor` reads boxes.
  """
  boxes = np.asarray(boxes, np.float32).astype(np.float64)
  corners = _scale_xy(boxes.reshape(*boxes.shape[:-1], 2, 2), original_size, resized_size)
  return corners.reshape(boxes.shape)


def _hw(size) -> tuple[int, int]:
  """(h, w) as Python ints: hashable, static jit arguments (sizes may come as numpy or tensors)."""
  return int(size[0]), int(size[1])


@functools.partial(jax.jit, static_argnames=("original_size", "resized_size", "size"))
def _postprocess(low_res: jax.Array, original_size, resized_size, size: int) -> jax.Array:
  def bilinear(x, height, width):  # torch's align_corners=False bilinear, no antialiasing
    return jax.image.resize(x, (*x.shape[:-2], height, width), "bilinear", antialias=False)

  padded = bilinear(low_res.astype(jnp.float32), size, size)
  return bilinear(padded[..., :resized_size[0], :resized_size[1]], *original_size)


def postprocess_masks(low_res, original_size, resized_size, size: int = SAM_SIZE) -> jax.Array:
  """Mask logits [..., h, w] -> float32 logits [..., *original_size], as HF's
  `post_process_masks(binarize=False)`: bilinear to the padded input (size x size), crop the
  padding off, bilinear to the original image.
  """
  return _postprocess(jnp.asarray(low_res), _hw(original_size), _hw(resized_size), int(size))


def binarize(logits, threshold: float = 0.0):
  """Mask logits -> bool masks: SAM's `mask_threshold` (a logit, 0 by default)."""
  return logits > threshold
