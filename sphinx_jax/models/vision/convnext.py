"""ConvNeXt (timm / HF ConvNextModel), NHWC: SPHINX's open_clip convnext_xxlarge trunk.

SPHINX takes the last stage's map after timm's `head.norm` (a LayerNorm over channels at every
position) with pooling removed, so that map is the output here. The blocks of each stage are one
`nn.scan` (stacked params under that stage's `layers`).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from sphinx_jax.configs import ConvNextConfig
from sphinx_jax.models.layers import dense, kernel_init, layer_norm, scanned, zeros_init
from sphinx_jax.models.vision.vit import ACTIVATIONS, PatchConv

_MAP_AXES = ("batch", None, None, "act_embed")


class DepthwiseConv(nn.Module):
  """A k x k depthwise conv, stride 1, zero 'same' padding, as a sum of k^2 shifted products.

  Same params as `nn.Conv(c, (k, k), feature_group_count=c)` (kernel [k, k, 1, c], bias [c]).
  XLA's CPU backend runs a grouped convolution inside a scanned layer ~30x slower than this sum
  (and its gradient far slower still), which made the ConvNeXt the cost of training the towers.
  """

  features: int
  kernel_size: int
  dtype: str
  param_dtype: str

  @nn.compact
  def __call__(self, x):
    k, c, h, w = self.kernel_size, self.features, x.shape[1], x.shape[2]
    # Replicated: tiny, and an fsdp-sharded channel axis makes XLA shard the conv by channel
    # against the batch-sharded activations.
    kernel = self.param("kernel", kernel_init(("conv_spatial", "conv_spatial_w", None,
                                               "conv_in")), (k, k, 1, c), self.param_dtype)
    bias = self.param("bias", zeros_init(("embed",)), (c,), self.param_dtype)
    kernel = kernel.astype(self.dtype)
    x = x.astype(self.dtype)
    pad = k // 2
    padded = jnp.pad(x, ((0, 0), (pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
    out = sum(padded[:, i:i + h, j:j + w] * kernel[i, j, 0] for i in range(k) for j in range(k))
    return out + bias.astype(self.dtype)


class ConvNextBlock(nn.Module):
  """x + gamma * fc2(gelu(fc1(norm(dwconv7x7(x))))); scanned, so it returns (x, None)."""

  cfg: ConvNextConfig
  dim: int

  @nn.compact
  def __call__(self, x):
    cfg, c, k = self.cfg, self.dim, self.cfg.kernel_size
    y = DepthwiseConv(c, k, cfg.dtype, cfg.param_dtype, name="conv_dw")(x)
    y = layer_norm(cfg, cfg.norm_eps, "norm")(y)
    y = ACTIVATIONS["gelu"](dense(cfg, cfg.mlp_ratio * c, ("embed", "mlp"), "fc1")(y))
    y = dense(cfg, c, ("mlp", "embed"), "fc2")(y)
    if cfg.layerscale:
      gamma = self.param("gamma", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                         (c,), cfg.param_dtype)
      y = y * gamma.astype(cfg.dtype)
    return nn.with_logical_constraint(x + y, _MAP_AXES), None


class ConvNextStage(nn.Module):
  """Downsampling (LayerNorm, 2x2 stride-2 conv; not in stage 0), then the scanned blocks."""

  cfg: ConvNextConfig
  index: int

  @nn.compact
  def __call__(self, x):
    cfg, s = self.cfg, self.index
    if s > 0:
      x = layer_norm(cfg, cfg.norm_eps, "down_norm")(x)
      x = PatchConv(cfg.dims[s], 2, True, cfg.dtype, cfg.param_dtype, name="downsample")(x)
    x, _ = scanned(ConvNextBlock, cfg, cfg.depths[s])(cfg, cfg.dims[s], name="layers")(x)
    return x


class ConvNext(nn.Module):
  """pixels [B, H, W, C] (NHWC) -> map [B, H/stride, W/stride, dims[-1]] after the head norm.

  Params: stem (patch conv), stem_norm, stage_{s} (down_norm, downsample, layers), head_norm.
  """

  cfg: ConvNextConfig

  @nn.compact
  def __call__(self, pixels):
    cfg = self.cfg
    x = PatchConv(cfg.dims[0], cfg.patch_size, True, cfg.dtype, cfg.param_dtype,
                  name="stem")(pixels)
    x = layer_norm(cfg, cfg.norm_eps, "stem_norm")(x)
    for s in range(len(cfg.dims)):
      x = ConvNextStage(cfg, s, name=f"stage_{s}")(x)
    return layer_norm(cfg, cfg.head_norm_eps, "head_norm")(x)
