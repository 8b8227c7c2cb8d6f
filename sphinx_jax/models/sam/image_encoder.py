"""SAM's image encoder (segment_anything ImageEncoderViT / HF SamVisionEncoder), NHWC.

A plain ViT over 16 px patches with absolute positions on the patch grid; most blocks attend
within 14x14 windows (the grid zero-padded to whole windows after the block's first norm), every
`period`-th block over the whole grid; every block adds decomposed relative positions (MViTv2)
to its attention logits. A conv neck maps to the `channels`-wide image embedding the decoder
reads. Params: `layers` stacks periods (scanned); in each period `windowed` stacks the
windowed blocks (scanned) and `global` is the period's last block, so compile time does not grow
with depth and ViT-B/L/H differ only in config.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import SamConfig
from sphinx_jax.models.layers import kernel_init, layer_norm, scanned, zeros_init
from sphinx_jax.models.vision.vit import Mlp, PatchConv

_MAP = ("batch", None, None, "act_embed")


def relative_positions(table: jax.Array, size: int) -> jax.Array:
  """[2 size - 1, C] embeddings by offset -> [size (query), size (key), C]: row q - k + size - 1.
  (SAM resizes the table when query and key sizes differ; here they never do.)"""
  offsets = jnp.arange(size)[:, None] - jnp.arange(size)[None, :] + size - 1
  return table[offsets]


class RelPosAttention(nn.Module):
  """Self-attention over a square of tokens [N, s, s, D] with SAM's decomposed relative
  positions: logit(q, k) += q . Rh[q_row - k_row] + q . Rw[q_col - k_col] (q before scaling)."""

  cfg: SamConfig
  size: int

  def _param(self, name, shape, axes, init=kernel_init):
    return self.param(name, init(axes), shape, self.cfg.param_dtype).astype(self.cfg.dtype)

  @nn.compact
  def __call__(self, x):
    cfg, s = self.cfg, self.size
    n, h, w = x.shape[0], cfg.n_heads, cfg.head_dim

    def project(name):
      kernel = self._param("w" + name, (cfg.width, h, w), ("embed", "heads", "head_dim"))
      bias = self._param("b" + name, (h, w), ("heads", "head_dim"), zeros_init)
      return jnp.einsum("nxyd,dhk->nxyhk", x, kernel) + bias

    q, k, v = project("q"), project("k"), project("v")
    rows = relative_positions(self._param("rel_pos_h", (2 * s - 1, w), (None, "head_dim"),
                                          zeros_init), s)
    cols = relative_positions(self._param("rel_pos_w", (2 * s - 1, w), (None, "head_dim"),
                                          zeros_init), s)
    bias = (jnp.einsum("nxyhc,xkc->nhxyk", q, rows)[..., :, None]
            + jnp.einsum("nxyhc,ykc->nhxyk", q, cols)[..., None, :])
    flat = lambda t: t.reshape(n, s * s, h, w)
    out = jax.nn.dot_product_attention(
        flat(q), flat(k), flat(v), bias=bias.reshape(n, h, s * s, s * s),
        implementation=None if cfg.attention == "xla" else cfg.attention)
    wo = self._param("wo", (h, w, cfg.width), ("heads", "head_dim", "embed"))
    bo = self._param("bo", (cfg.width,), ("embed",), zeros_init)
    return (jnp.einsum("nthk,hkd->ntd", out, wo) + bo).reshape(n, s, s, cfg.width)


def to_windows(x: jax.Array, size: int) -> jax.Array:
  """[B, H, W, D] zero-padded to whole windows -> [B * nh * nw, size, size, D]."""
  b, hh, ww, d = x.shape
  ph, pw = -hh % size, -ww % size
  x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
  nh, nw = (hh + ph) // size, (ww + pw) // size
  x = x.reshape(b, nh, size, nw, size, d).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b * nh * nw, size, size, d)


def from_windows(windows: jax.Array, batch: int, height: int, width: int) -> jax.Array:
  """The inverse of `to_windows`: [B * nh * nw, s, s, D] -> [B, height, width, D]."""
  s, d = windows.shape[1], windows.shape[-1]
  nh, nw = -(-height // s), -(-width // s)
  x = windows.reshape(batch, nh, nw, s, s, d).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch, nh * s, nw * s, d)[:, :height, :width]


class Block(nn.Module):
  """x + attn(norm1(x)) within windows (or over the grid), then x + mlp(norm2(x))."""

  cfg: SamConfig
  windowed: bool

  @nn.compact
  def __call__(self, x, _=None):
    cfg = self.cfg
    b, g = x.shape[0], x.shape[1]
    y = layer_norm(cfg, cfg.norm_eps, "norm1")(x)
    if self.windowed:
      y = RelPosAttention(cfg, cfg.window_size, name="attn")(to_windows(y, cfg.window_size))
      y = from_windows(y, b, g, x.shape[2])
    else:
      y = RelPosAttention(cfg, g, name="attn")(y)
    x = x + y
    x = x + Mlp(cfg, name="mlp")(layer_norm(cfg, cfg.norm_eps, "norm2")(x))
    return nn.with_logical_constraint(x, _MAP), None


class Period(nn.Module):
  """`period - 1` windowed blocks (scanned), then one global block."""

  cfg: SamConfig

  @nn.compact
  def __call__(self, x, _=None):
    cfg = self.cfg
    if cfg.period > 1:
      windowed = scanned(Block, cfg, cfg.period - 1, axis="sublayers")
      x, _ = windowed(cfg, True, name="windowed")(x)
    x, _ = Block(cfg, False, name="global")(x)
    return x, None


class Conv(nn.Module):
  """A bias-free k x k conv, stride 1, 'same' zero padding (the neck's 1x1 and 3x3), NHWC."""

  features: int
  kernel_size: int
  cfg: SamConfig

  @nn.compact
  def __call__(self, x):
    k, cfg = self.kernel_size, self.cfg
    kernel = self.param("kernel", kernel_init(("conv_spatial", "conv_spatial_w", "conv_in",
                                               "embed")),
                        (k, k, x.shape[-1], self.features), cfg.param_dtype)
    return jax.lax.conv_general_dilated(
        x.astype(cfg.dtype), kernel.astype(cfg.dtype), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ImageEncoder(nn.Module):
  """pixels [B, image_size, image_size, 3] (normalised, padded) -> [B, grid, grid, channels]."""

  cfg: SamConfig

  @nn.compact
  def __call__(self, pixels):
    cfg = self.cfg
    x = PatchConv(cfg.width, cfg.patch_size, True, cfg.dtype, cfg.param_dtype,
                  name="patch_embed")(pixels)
    pos = self.param("pos_embed", kernel_init((None, None, "embed")),
                     (cfg.grid, cfg.grid, cfg.width), cfg.param_dtype)
    x = nn.with_logical_constraint(x + pos.astype(cfg.dtype), _MAP)
    x, _ = scanned(Period, cfg, len(cfg.global_blocks))(cfg, name="layers")(x)
    x = layer_norm(cfg, 1e-6, "neck_norm1")(Conv(cfg.channels, 1, cfg, name="neck_conv1")(x))
    x = layer_norm(cfg, 1e-6, "neck_norm2")(Conv(cfg.channels, 3, cfg, name="neck_conv2")(x))
    return x
