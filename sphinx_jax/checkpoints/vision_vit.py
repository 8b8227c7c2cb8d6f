"""ViT weights (CLIP ViT-L/14, DINOv2, BLIP-2's EVA ViT-g) from open_clip, dinov2-hub and HF names.

Canonical names, in torch layouts: patch [D, C, p, p] (+ bias), cls, pos [1 + G*G, D], ln_pre,
ln_post; per layer {i}: ln_1, qkv [3D, D] (rows q|k|v, head-major), out, ln_2, fc1 (SwiGLU:
rows gate|up), fc2, ls_1, ls_2. Everything else is inferred from shapes.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.checkpoints.vision import (Getter, Source, attention, emit, infer_heads, linear,
                                          norm, square_grid, under)
from sphinx_jax.configs import ViTConfig


_OPEN_CLIP_LAYER = "transformer.resblocks.{i}."
OPEN_CLIP = {
    "patch": "conv1", "cls": "class_embedding", "pos": "positional_embedding",
    "ln_pre": "ln_pre", "ln_post": "ln_post",
    **under(_OPEN_CLIP_LAYER, {
        "ln_1": "ln_1", "qkv.weight": "attn.in_proj_weight", "qkv.bias": "attn.in_proj_bias",
        "out": "attn.out_proj", "ln_2": "ln_2", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj",
        "ls_1": "ls_1.gamma", "ls_2": "ls_2.gamma"}),
}

_DINOV2_HUB_LAYER = "blocks.{i}."
DINOV2_HUB = {
    "patch": "patch_embed.proj", "cls": "cls_token", "pos": "pos_embed", "ln_post": "norm",
    **under(_DINOV2_HUB_LAYER, {
        "ln_1": "norm1", "qkv": "attn.qkv", "out": "attn.proj", "ls_1": "ls1.gamma",
        "ln_2": "norm2", "fc1": ["mlp.fc1", "mlp.w12"], "fc2": ["mlp.fc2", "mlp.w3"],
        "ls_2": "ls2.gamma"}),
}

_HF_CLIP_LAYER = "encoder.layers.{i}."
HF_CLIP = {
    "patch": "embeddings.patch_embedding", "cls": "embeddings.class_embedding",
    "pos": "embeddings.position_embedding.weight", "ln_pre": "pre_layrnorm",
    "ln_post": "post_layernorm",
    **under(_HF_CLIP_LAYER, {
        "ln_1": "layer_norm1", "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "out": "self_attn.out_proj", "ln_2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}),
}

HF_BLIP2_VISION = {
    "patch": "embeddings.patch_embedding", "cls": "embeddings.class_embedding",
    "pos": "embeddings.position_embedding", "ln_post": "post_layernorm",
    **under(_HF_CLIP_LAYER, {
        "ln_1": "layer_norm1", "qkv": "self_attn.qkv", "out": "self_attn.projection",
        "ln_2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}),
}

# Checkpoints on the hub use the first names; transformers 5 renamed them (second).
_HF_DINOV2_LAYER = "encoder.layer.{i}."
HF_DINOV2 = {
    "patch": "embeddings.patch_embeddings.projection", "cls": "embeddings.cls_token",
    "pos": "embeddings.position_embeddings", "ln_post": "layernorm",
    **under(_HF_DINOV2_LAYER, {
        "ln_1": "norm1", "ls_1": "layer_scale1.lambda1", "ln_2": "norm2",
        "ls_2": "layer_scale2.lambda1",
        "qkv": [("attention.attention.query", "attention.attention.key",
                 "attention.attention.value"),
                ("attention.q_proj", "attention.k_proj", "attention.v_proj")],
        "out": ["attention.output.dense", "attention.o_proj"],
        "fc1": ["mlp.fc1", "mlp.weights_in", ("mlp.gate_proj", "mlp.up_proj")],
        "fc2": ["mlp.fc2", "mlp.weights_out", "mlp.down_proj"]}),
}


def open_clip_vit(keys: Iterable[str], get: Getter, prefix: str = "visual.", *,
                  act: str = "gelu", n_heads: int | None = None, root="clip", dtype=None):
  """open_clip ViT (SPHINX: `llma.clip.visual.`). `proj` is skipped, as SPHINX skips it.

  act: 'gelu' as SPHINX builds ViT-L-14 (pretrained=None); OpenAI's own weights use 'quick_gelu'.
  """
  src = Source(keys, get, prefix, OPEN_CLIP, ignore=[r"proj"])
  cfg = _infer(src, _OPEN_CLIP_LAYER, act=act, eps=1e-5, n_heads=n_heads, dtype=dtype)
  return cfg, vit_parts(src, cfg, root, dtype)


def dinov2_hub_vit(keys: Iterable[str], get: Getter, prefix: str = "", *, grid: int = 16,
                   interpolate_offset: float = 0.1, n_heads: int | None = None,
                   root="dinov2", dtype=None):
  """torch.hub dinov2 ViT (SPHINX: `llma.dinov2_vitg14.`), position embeddings resized to
  `grid` x `grid` as the hub's interpolate_pos_encoding does at run time."""
  src = Source(keys, get, prefix, DINOV2_HUB, ignore=[r"mask_token"])
  cfg = _infer(src, _DINOV2_HUB_LAYER, act="gelu", eps=1e-6, n_heads=n_heads, grid=grid,
               dtype=dtype)
  return cfg, vit_parts(src, cfg, root, dtype, interpolate_offset)


def hf_clip_vit(keys: Iterable[str], get: Getter, prefix: str = "", *, act: str = "quick_gelu",
                eps: float = 1e-5, n_heads: int | None = None, root="clip", dtype=None):
  """HF CLIPVisionModel (a CLIPModel's tower: prefix 'vision_model.'). act: config.hidden_act."""
  src = Source(keys, get, prefix, HF_CLIP, ignore=[r"embeddings\.position_ids"])
  cfg = _infer(src, _HF_CLIP_LAYER, act=act, eps=eps, n_heads=n_heads, dtype=dtype)
  return cfg, vit_parts(src, cfg, root, dtype)


def hf_dinov2_vit(keys: Iterable[str], get: Getter, prefix: str = "", *, grid: int | None = None,
                  interpolate_offset: float = 0.0, eps: float = 1e-6, n_heads: int | None = None,
                  root="dinov2", dtype=None):
  """HF Dinov2Model, old or new key names. With `grid`, position embeddings are resized as HF
  does at run time (no offset: by output size)."""
  src = Source(keys, get, prefix, HF_DINOV2, ignore=[r"embeddings\.mask_token"])
  cfg = _infer(src, _HF_DINOV2_LAYER, act="gelu", eps=eps, n_heads=n_heads, grid=grid,
               dtype=dtype)
  return cfg, vit_parts(src, cfg, root, dtype, interpolate_offset)


def hf_blip2_vit(keys: Iterable[str], get: Getter, prefix: str = "vision_model.", *,
                 eps: float = 1e-6, n_heads: int | None = None, root=("qformer", "vision"),
                 dtype=None):
  """HF Blip2VisionModel (EVA ViT-g; SPHINX: `llma.qformer.vision_model.`)."""
  src = Source(keys, get, prefix, HF_BLIP2_VISION)
  cfg = _infer(src, _HF_CLIP_LAYER, act="gelu", eps=eps, n_heads=n_heads, dtype=dtype)
  return cfg, vit_parts(src, cfg, root, dtype)


def _infer(src: Source, layer: str, *, act: str, eps: float, n_heads: int | None,
           grid: int | None = None, dtype=None) -> ViTConfig:
  """Architecture from shapes: width (cls), patch and channels (patch conv), grid (positions),
  depth (layer keys), FFN width and SwiGLU (fc1 twice fc2's input: gate and up fused)."""
  cls = src("cls")
  width = cls.size
  patch = src("patch.weight")
  if patch.ndim != 4 or patch.shape[0] != width or patch.shape[2] != patch.shape[3]:
    raise ConversionError(f"{src.prefix}: patch conv weight of shape {patch.shape} does not fit "
                          f"width {width}")
  stored_grid = square_grid(src("pos").size // width - 1, f"{src.prefix} position embeddings")
  depth = src.count(layer)
  if depth == 0:
    raise ConversionError(f"{src.prefix}: no layers ({src.prefix + layer.format(i=0)}*)")
  fc1_rows = src.shape("fc1.bias", i=0)[0]
  mlp_dim = src.shape("fc2.weight", i=0)[1]
  swiglu = fc1_rows == 2 * mlp_dim
  dtype = dtype or str(cls.dtype)
  return ViTConfig(
      image_size=(grid or stored_grid) * patch.shape[2], patch_size=patch.shape[2], width=width,
      depth=depth, n_heads=infer_heads(width, n_heads), mlp_dim=mlp_dim,
      act="swiglu" if swiglu else act, norm_eps=eps, patch_bias=src.has("patch.bias"),
      pre_norm=src.has("ln_pre.weight"), layerscale=src.has("ls_1", i=0),
      in_channels=patch.shape[1], param_dtype=dtype, dtype=dtype)


def resize_positions(pos: np.ndarray, grid: int, interpolate_offset: float) -> np.ndarray:
  """[1 + G*G, D] -> [1 + grid*grid, D], as dinov2's interpolate_pos_encoding: torch bicubic
  (align_corners=False, no antialias) in float32, cast back; with an offset, torch maps
  coordinates by scale_factor (grid + offset) / G, not by the size ratio."""
  from sphinx_jax.models.vision.resize import bicubic_resize
  stored = square_grid(pos.shape[0] - 1, "position embeddings")
  if stored == grid:
    return pos
  patches = pos[1:].astype(np.float32).reshape(stored, stored, -1)
  scale = (grid + interpolate_offset) / stored if interpolate_offset else None
  out = np.asarray(bicubic_resize(patches, (grid, grid), scale_factor=scale))
  return np.concatenate([pos[:1], out.reshape(grid * grid, -1).astype(pos.dtype)])


def vit_parts(src: Source, cfg: ViTConfig, root, dtype=None,
              interpolate_offset: float = 0.0) -> Iterator[dict]:
  """Disk-layout parts of a `vit.ViT`: the unstacked params, then one layer per part."""
  d, p, f = cfg.width, cfg.patch_size, cfg.mlp_dim
  patch = {"kernel": src("patch.weight", (d, cfg.in_channels, p, p)).transpose(2, 3, 1, 0)}
  if cfg.patch_bias:
    patch["bias"] = src("patch.bias", (d,))
  pos = src("pos")
  top = {"patch_embed": patch, "cls_token": src("cls", (d,)),
         "pos_embed": resize_positions(pos.reshape(-1, d), cfg.grid, interpolate_offset),
         "ln_post": norm(src, "ln_post", d)}
  if cfg.pre_norm:
    top["ln_pre"] = norm(src, "ln_pre", d)
  yield emit(root, top, dtype)
  for i in range(cfg.depth):
    qkv_w, qkv_b = src("qkv.weight", (3 * d, d), i=i), src("qkv.bias", (3 * d,), i=i)
    q, k, v = ({"kernel": w.T, "bias": b}
               for w, b in zip(np.split(qkv_w, 3), np.split(qkv_b, 3)))
    layer = {"ln_1": norm(src, "ln_1", d, i=i), "ln_2": norm(src, "ln_2", d, i=i),
             "attn": attention(q, k, v, linear(src, "out", d, d, i=i), cfg.n_heads)}
    if cfg.act == "swiglu":
      w12, b12 = src("fc1.weight", (2 * f, d), i=i), src("fc1.bias", (2 * f,), i=i)
      layer["mlp"] = {"w1": {"kernel": w12[:f].T, "bias": b12[:f]},
                      "w3": {"kernel": w12[f:].T, "bias": b12[f:]},
                      "w2": linear(src, "fc2", d, f, i=i)}
    else:
      layer["mlp"] = {"fc1": linear(src, "fc1", f, d, i=i), "fc2": linear(src, "fc2", d, f, i=i)}
    if cfg.layerscale:
      layer["ls_1"], layer["ls_2"] = src("ls_1", (d,), i=i), src("ls_2", (d,), i=i)
    yield emit(root, layer, dtype, layer=i)
