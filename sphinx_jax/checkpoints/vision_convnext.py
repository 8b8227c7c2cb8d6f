"""ConvNeXt weights from timm names (open_clip's convnext_xxlarge `visual.trunk.*`) and HF
ConvNextModel names.

Canonical names, in torch layouts: stem [C0, 3, p, p], stem_norm; per stage {s} > 0: down_norm,
down [Cs, Cs-1, 2, 2]; per block {s}.{j}: dw [C, 1, k, k], norm, fc1, fc2, gamma; head_norm.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.checkpoints.vision import (Getter, Source, emit, linear, norm, root_path,
                                          under)
from sphinx_jax.configs import ConvNextConfig

_TIMM_STAGE, _TIMM_BLOCK = "stages.{s}.", "stages.{s}.blocks.{j}."
TIMM = {
    "stem": "stem.0", "stem_norm": "stem.1", "head_norm": "head.norm",
    "down_norm": _TIMM_STAGE + "downsample.0", "down": _TIMM_STAGE + "downsample.1",
    **under(_TIMM_BLOCK, {"dw": "conv_dw", "norm": "norm", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
                          "gamma": "gamma"}),
}

_HF_STAGE, _HF_BLOCK = "encoder.stages.{s}.", "encoder.stages.{s}.layers.{j}."
HF = {
    "stem": "embeddings.patch_embeddings", "stem_norm": "embeddings.layernorm",
    "head_norm": "layernorm",
    "down_norm": _HF_STAGE + "downsampling_layer.0", "down": _HF_STAGE + "downsampling_layer.1",
    **under(_HF_BLOCK, {"dw": "dwconv", "norm": "layernorm", "fc1": "pwconv1", "fc2": "pwconv2",
                        "gamma": "layer_scale_parameter"}),
}


def timm_convnext(keys: Iterable[str], get: Getter, prefix: str = "visual.trunk.", *,
                  norm_eps: float = 1e-5, root="convnext", dtype=None):
  """timm ConvNeXt (SPHINX keeps open_clip's trunk as `llma.openclip_convnext_xxl.`); a
  classifier `head.fc` is skipped. norm_eps: timm's, used by every norm including head.norm (convnext_xxlarge: 1e-5)."""
  src = Source(keys, get, prefix, TIMM, ignore=[r"head\.fc\..*"])
  cfg = _infer(src, _TIMM_STAGE, _TIMM_BLOCK, norm_eps, norm_eps, dtype)
  return cfg, convnext_parts(src, cfg, root, dtype)


def hf_convnext(keys: Iterable[str], get: Getter, prefix: str = "", *,
                layer_norm_eps: float = 1e-12, root="convnext", dtype=None):
  """HF ConvNextModel (inside ConvNextForImageClassification: prefix 'convnext.'). Its inner
  norms use eps 1e-6; the final `layernorm` uses config.layer_norm_eps."""
  src = Source(keys, get, prefix, HF)
  cfg = _infer(src, _HF_STAGE, _HF_BLOCK, 1e-6, layer_norm_eps, dtype)
  return cfg, convnext_parts(src, cfg, root, dtype)


def _infer(src: Source, stage: str, block: str, norm_eps: float, head_norm_eps: float,
           dtype) -> ConvNextConfig:
  depths = tuple(src.count(block, s=s) for s in range(src.count(stage)))
  if not depths or 0 in depths:
    raise ConversionError(f"{src.prefix}: stages with blocks expected, found depths {depths}")
  dims = tuple(src.shape("norm.weight", s=s, j=0)[0] for s in range(len(depths)))
  stem = src("stem.weight")
  dw = src.shape("dw.weight", s=0, j=0)
  dtype = dtype or str(stem.dtype)
  return ConvNextConfig(
      depths=depths, dims=dims, patch_size=stem.shape[-1], kernel_size=dw[-1],
      mlp_ratio=src.shape("fc1.bias", s=0, j=0)[0] // dims[0], norm_eps=norm_eps,
      head_norm_eps=head_norm_eps, layerscale=src.has("gamma", s=0, j=0),
      in_channels=stem.shape[1], param_dtype=dtype, dtype=dtype)


def _conv(src: Source, name: str, shape: tuple[int, ...], **idx) -> dict:
  """torch conv [out, in, kh, kw] (+ bias) -> NHWC kernel [kh, kw, in, out] (+ bias)."""
  return {"kernel": src(f"{name}.weight", shape, **idx).transpose(2, 3, 1, 0),
          "bias": src(f"{name}.bias", shape[:1], **idx)}


def convnext_parts(src: Source, cfg: ConvNextConfig, root, dtype=None) -> Iterator[dict]:
  """Disk-layout parts of a `convnext.ConvNext`: unstacked params, then one block per part."""
  dims, p, k, r = cfg.dims, cfg.patch_size, cfg.kernel_size, cfg.mlp_ratio
  top = {"stem": _conv(src, "stem", (dims[0], cfg.in_channels, p, p)),
         "stem_norm": norm(src, "stem_norm", dims[0]),
         "head_norm": norm(src, "head_norm", dims[-1])}
  for s in range(1, len(dims)):
    top[f"stage_{s}"] = {"down_norm": norm(src, "down_norm", dims[s - 1], s=s),
                         "downsample": _conv(src, "down", (dims[s], dims[s - 1], 2, 2), s=s)}
  yield emit(root, top, dtype)
  for s, (depth, c) in enumerate(zip(cfg.depths, dims)):
    for j in range(depth):
      block = {"conv_dw": _conv(src, "dw", (c, 1, k, k), s=s, j=j),
               "norm": norm(src, "norm", c, s=s, j=j),
               "fc1": linear(src, "fc1", r * c, c, s=s, j=j),
               "fc2": linear(src, "fc2", c, r * c, s=s, j=j)}
      if cfg.layerscale:
        block["gamma"] = src("gamma", (c,), s=s, j=j)
      yield emit((*root_path(root), f"stage_{s}"), block, dtype, layer=j)
