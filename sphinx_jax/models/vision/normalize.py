"""Pixel statistics: SPHINX feeds every tower CLIP-normalised pixels; DINOv2 wants ImageNet's."""
from __future__ import annotations

import jax
import jax.numpy as jnp

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clip_to_imagenet(x: jax.Array) -> jax.Array:
  """Re-normalise CLIP-normalised pixels [..., C] for DINOv2, in the reference's operation order.

  (llama_ens*.py: (x*clip_std + clip_mean - dino_mean)/dino_std. The light variants fold the
  constants, x*(clip_std/dino_std) + (clip_mean - dino_mean)/dino_std: float32 rounding apart.)
  """
  c = lambda v: jnp.asarray(v, x.dtype)  # noqa: E731
  return (x * c(CLIP_STD) + c(CLIP_MEAN) - c(IMAGENET_MEAN)) / c(IMAGENET_STD)
