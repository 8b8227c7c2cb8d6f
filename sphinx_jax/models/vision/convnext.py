"""ConvNeXt (timm / HF ConvNextModel), NHWC: SPHINX's open_clip convnext_xxlarge trunk.

SPHINX takes the last stage's map after timm's `head.norm` (a LayerNorm over channels at every
position) with pooling removed, so that map is the output here. The blocks of each stage are one
`nn.scan` (stacked params under that stage's `layers`).
"""
from __future__ import annotations

import flax.linen as nn

from sphinx_jax.configs import ConvNextConfig
from sphinx_jax.models.vision.vit import (ACTIVATIONS, PatchConv, dense, kernel_init, layer_norm,
                                          scanned, zeros_init)

_MAP_AXES = ("batch", None, None, "act_embed")


class ConvNextBlock(nn.Module):
  """x + gamma * fc2(gelu(fc1(norm(dwconv7x7(x))))); scanned, so it returns (x, None)."""

  cfg: ConvNextConfig
  dim: int

  @nn.compact
  def __call__(self, x):
    cfg, c, k = self.cfg, self.dim, self.cfg.kernel_size
    y = nn.Conv(c, (k, k), padding=k // 2, feature_group_count=c, dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                # Replicated: tiny, and an fsdp-sharded channel axis makes XLA shard the conv by
                # channel against the batch-sharded activations.
                kernel_init=kernel_init(("conv_spatial", "conv_spatial_w", None, "conv_in")),
                bias_init=zeros_init(("embed",)), name="conv_dw")(x)
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
