"""Image preprocessing and view tiling, exactly as LLaMA2-Accessory's SPHINX.

`preprocess` is the reference's `padded_resize` transform (accessory/data/transform.py), host side:
RGB (`to_rgb`), pad to a centred square with the CLIP-mean colour, PIL bicubic resize, /255, CLIP
statistics.

`make_views` is the tiling the reference does inside `encode_image`. It returns, for every plan,
`{'vit': [..., V, s, s, 3], 'convnext': [..., V, t, t, 3]}`: exactly the pixels the ViT towers
(CLIP, Q-Former, DINOv2) and the ConvNeXt receive, view i of both stacks being the same region, so
a model consumes every plan alike and never resizes. The ConvNeXt stacks already include the
reference's fp16 nearest resize (224 -> 256, or the 512 -> 512 fp16 cast of the 512-px variants);
DINOv2's re-normalisation (`models.vision.normalize.clip_to_imagenet`) stays in the model.
Resizes of views are torch bicubic on fp16-rounded pixels, as the reference's `x.half()`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sphinx_jax.models.vision.normalize import CLIP_MEAN, CLIP_STD
from sphinx_jax.models.vision.resize import DEFAULT_ARITHMETIC, bicubic_resize, nearest_resize
from sphinx_jax.util.errors import UserError

PAD_COLOR = tuple(int(255 * m) for m in CLIP_MEAN)  # (122, 116, 104): the reference truncates


def _is_16_bit(mode: str) -> bool:
  return mode == "I" or mode.startswith("I;16")


def to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL image as 8-bit RGB, scaling high bit depths instead of clipping them.

  PIL's own `convert("RGB")` clips 16-bit gray to 0..255, which saturates nearly every pixel of
  a 16-bit PNG. Here "I;16*" and "I" (PIL opens 16-bit PNGs and TIFFs as these) are read as
  0..65535 (an "I" value outside is clipped to it) and scaled by 255/65535, rounded. "F" (32-bit
  float) follows PIL's convention, 0..255: clipped, truncated, NaN black, as `convert("L")`;
  a 0..1 float image is therefore nearly black and must be scaled by whoever made it. Every
  other mode (L, P, LA, PA, RGBA, CMYK, ...) is PIL's `convert("RGB")` (alpha dropped).
  """
  if image.mode == "RGB":
    return image
  if _is_16_bit(image.mode):
    pixels = np.clip(np.asarray(image, np.int64), 0, 65535)
    image = Image.fromarray(((pixels + 128) // 257).astype(np.uint8))  # round(v * 255/65535)
  return image.convert("RGB")


def pad_to_square(image: Image.Image) -> Image.Image:
  """Centre `image` on a max-edge square of PAD_COLOR; odd margins put the extra pixel after."""
  w, h = image.size
  if w == h:
    return image
  side = max(w, h)
  square = Image.new(image.mode, (side, side), PAD_COLOR)
  square.paste(image, ((side - w) // 2, (side - h) // 2))
  return square


def square(image: Image.Image, size: int) -> np.ndarray:
  """A PIL image -> uint8 [size, size, 3]: padded to a square and resized, as the reference."""
  padded = pad_to_square(to_rgb(image))
  if padded.size != (size, size):
    padded = padded.resize((size, size), Image.Resampling.BICUBIC)
  return np.asarray(padded, np.uint8)


def normalize(pixels: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> float32, /255 then CLIP statistics."""
  pixels = np.asarray(pixels, np.float32) / np.float32(255)
  return (pixels - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)


def preprocess(image: Image.Image, size: int) -> np.ndarray:
  """A PIL image -> [size, size, 3] float32, CLIP-normalised, as the reference's transform."""
  return normalize(square(image, size))


@dataclasses.dataclass(frozen=True)
class TowerViews:
  """One tower's views: a global view, then row-major tiles, then an optional fp16 nearest resize.

  The global view is the image resized to `side` (the image itself when it already is). Tiles of
  `side` are cut from the image resized to `tiled_from` (native crops when that is the image size;
  None: no tiles).
  """

  side: int
  tiled_from: int | None = None
  nearest_to: int | None = None

  @property
  def num_views(self) -> int:
    return 1 + (self.tiled_from // self.side) ** 2 if self.tiled_from else 1

  @property
  def input_side(self) -> int:
    return self.nearest_to or self.side


@dataclasses.dataclass(frozen=True)
class ViewPlan:
  """How one preprocessed square of `image_size` becomes the views of each tower."""

  image_size: int
  vit: TowerViews
  convnext: TowerViews

  def __post_init__(self):
    for name, tower in (("vit", self.vit), ("convnext", self.convnext)):
      if tower.tiled_from and tower.tiled_from % tower.side:
        raise UserError(f"{name}: tiles of {tower.side} do not divide {tower.tiled_from}")
    if self.vit.num_views != self.convnext.num_views:
      raise UserError(f"vit has {self.vit.num_views} views, convnext {self.convnext.num_views}")

  @property
  def num_views(self) -> int:
    return self.vit.num_views


VIEW_PLANS: dict[str, ViewPlan] = {
    # llama_ens: the image itself; ConvNeXt gets F.interpolate(x.half(), 256).
    "sphinx": ViewPlan(224, TowerViews(224), TowerViews(224, nearest_to=256)),
    # llama_ens5 / llama_ens10: global bicubic 224 + 2x2 / 3x3 native 224 crops.
    "sphinx_1k": ViewPlan(448, TowerViews(224, 448), TowerViews(224, 448, nearest_to=256)),
    "sphinx_2k": ViewPlan(672, TowerViews(224, 672), TowerViews(224, 672, nearest_to=256)),
    # llama_ens_light (and mixtral_sparse_ens): ViTs a bicubic 224, ConvNeXt the 512 image in fp16.
    "sphinx_tiny": ViewPlan(512, TowerViews(224), TowerViews(512, nearest_to=512)),
    # llama_ens5_light (and mixtral_sparse_ens5): ViTs 224 + crops of a 448 resize; ConvNeXt a 512
    # resize + native 512 crops.
    "sphinx_tiny_1k": ViewPlan(1024, TowerViews(224, 448), TowerViews(512, 1024)),
    # The laptop-sized `tiny` SPHINX presets (tests): each released plan at 28-px ViT views,
    # ConvNeXt at 16 (map repeated 2x) or, for the light ones, at 32 (its 4x4 map used as is).
    "tiny": ViewPlan(28, TowerViews(28), TowerViews(28, nearest_to=16)),
    "tiny_1k": ViewPlan(56, TowerViews(28, 56), TowerViews(28, 56, nearest_to=16)),
    "tiny_2k": ViewPlan(84, TowerViews(28, 84), TowerViews(28, 84, nearest_to=16)),
    "tiny_light": ViewPlan(32, TowerViews(28), TowerViews(32, nearest_to=32)),
    "tiny_light_1k": ViewPlan(64, TowerViews(28, 56), TowerViews(32, 64)),
    # `mini` (the embedded default): the world's 100-px padded square itself, every tower.
    "mini": ViewPlan(100, TowerViews(100), TowerViews(100)),
    # `mini` on sub-images (the default's stage 2): global 100 + 2x2 native crops of a 200 resize.
    "mini_1k": ViewPlan(200, TowerViews(100, 200), TowerViews(100, 200)),
}


def _tower_views(image: jax.Array, image_size: int, tower: TowerViews,
                 arithmetic: str) -> jax.Array:
  def resized(side):
    return image if side == image_size else bicubic_resize(image, side, half=True,
                                                           arithmetic=arithmetic)

  views = [resized(tower.side)]
  if tower.tiled_from:
    source, s = resized(tower.tiled_from), tower.side
    n = tower.tiled_from // s
    views += [source[..., r * s:(r + 1) * s, c * s:(c + 1) * s, :]
              for r in range(n) for c in range(n)]
  views = jnp.stack(views, axis=-4)
  return nearest_resize(views, tower.nearest_to, half=True) if tower.nearest_to else views


def make_views(image: jax.Array, plan: ViewPlan,
               arithmetic: str = DEFAULT_ARITHMETIC) -> dict[str, jax.Array]:
  """Preprocessed square(s) [..., S, S, 3] -> {'vit', 'convnext'} view stacks [..., V, H, W, 3].

  Views keep the input dtype: pass bfloat16 pixels to reproduce the reference run in bfloat16.
  The fp16 bicubic resizes compute as torch's `arithmetic` kernel does ('cuda': the GPUs SPHINX
  runs on; 'cpu': torch on a CPU).
  """
  if image.shape[-3:] != (plan.image_size, plan.image_size, 3):
    raise UserError(f"expected [..., {plan.image_size}, {plan.image_size}, 3] pixels, "
                     f"got shape {tuple(image.shape)}")
  return {name: _tower_views(jnp.asarray(image), plan.image_size, getattr(plan, name), arithmetic)
          for name in ("vit", "convnext")}
