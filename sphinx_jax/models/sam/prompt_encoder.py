"""SAM's prompt encoder: points and box corners -> sparse tokens, and the image's dense positions.

Coordinates are pixels of the resized (longest side = image_size) frame. Positions are random
Fourier features: [sin, cos](2 pi (2 c - 1) G) of coordinates c in [0, 1] with one Gaussian
matrix G [2, channels / 2], shared by the prompts and the image grid. Point labels: 1 foreground,
0 background, -1 "not a point" (the pad SAM appends to points without a box), -10 padding
(HF's: a zero token). Mask prompts (SAM's refinement from a previous mask) are not implemented:
no box-from-SPHINX path needs them; the dense embedding is always the learned no-mask one.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sphinx_jax.configs import SamConfig

PAD_LABEL = -10


def fourier(coords, gaussian):
  """Coordinates in [0, 1] [..., 2] (x, y) -> [..., channels]."""
  angles = 2 * np.pi * ((2 * coords - 1) @ gaussian)
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class PromptEncoder(nn.Module):
  cfg: SamConfig

  def setup(self):
    cfg = self.cfg
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed"))
    self.gaussian = self.param("gaussian", init, (2, cfg.channels // 2), cfg.param_dtype)
    # 0 background point, 1 foreground point, 2 box top-left, 3 box bottom-right
    self.point_embed = self.param("point_embed", init, (4, cfg.channels), cfg.param_dtype)
    self.not_a_point = self.param("not_a_point", init, (1, cfg.channels), cfg.param_dtype)
    self.no_mask = self.param("no_mask", init, (1, cfg.channels), cfg.param_dtype)

  def _encode(self, pixels):
    """Pixel coordinates (SAM shifts them to pixel centres) -> Fourier features."""
    return fourier((pixels + 0.5) / self.cfg.image_size, self.gaussian.astype(jnp.float32))

  def points(self, points, labels, pad: bool):
    """points [B, P, N, 2], labels [B, P, N] -> [B, P, N (+1 with `pad`), channels]."""
    if pad:
      points = jnp.concatenate([points, jnp.zeros_like(points[..., :1, :])], axis=-2)
      labels = jnp.concatenate([labels, -jnp.ones_like(labels[..., :1])], axis=-1)
    x = self._encode(points)
    labels = labels[..., None]
    x = jnp.where(labels == -1, self.not_a_point[0], x)
    x = jnp.where(labels == PAD_LABEL, 0.0, x)
    x = x + jnp.where(labels == 0, self.point_embed[0], 0.0)
    return x + jnp.where(labels == 1, self.point_embed[1], 0.0)

  def boxes(self, boxes):
    """boxes [B, P, 4] (x1, y1, x2, y2) -> corner tokens [B, P, 2, channels]."""
    corners = self._encode(boxes.reshape(*boxes.shape[:-1], 2, 2))
    return corners + self.point_embed[2:4]

  def __call__(self, points=None, labels=None, boxes=None):
    """The sparse tokens [B, P, N, channels]: the points' (padded when there is no box),
    then the box corners."""
    tokens = []
    if points is not None:
      tokens.append(self.points(points, labels, pad=boxes is None))
    if boxes is not None:
      tokens.append(self.boxes(boxes))
    if not tokens:
      raise ValueError("SAM needs points or boxes")
    return jnp.concatenate(tokens, axis=-2).astype(self.cfg.dtype)

  def dense_positions(self, grid: int):
    """The image grid's positions [grid, grid, channels], at cell centres."""
    centres = (jnp.arange(grid, dtype=jnp.float32) + 0.5) / grid
    xy = jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), axis=-1)
    return fourier(xy, self.gaussian.astype(jnp.float32)).astype(self.cfg.dtype)

  def no_mask_embedding(self):
    return self.no_mask[0].astype(self.cfg.dtype)
