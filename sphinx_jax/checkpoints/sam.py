"""Segment Anything weights: the official `segment_anything` files (`sam_vit_{b,l,h}_*.pth`) and
HF transformers `SamModel` directories -> a params checkpoint (config.json `"model": "sam"`).

One table of canonical names per source (`vision.Source`: every key must be mapped or known to
be unused, shapes are checked); the architecture is inferred from shapes (ViT-B/L/H or any
size), except the decoder's head count, which no shape carries (8 in every SAM; HF: its
config). The mask-prompt encoder (SAM's refinement from a previous mask) is skipped: the
models here take points and boxes. Parts are written one encoder period at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import jax
import numpy as np

from sphinx_jax.checkpoints import source_files
from sphinx_jax.checkpoints.torch_io import (ConversionError, SafetensorsStateDict, load_pth,
                                             read_json, to_numpy)
from sphinx_jax.checkpoints.vision import Source, attention, emit, linear, norm
from sphinx_jax.configs import SamConfig
from sphinx_jax.util.errors import UserError

SAM_MODEL = "sam"  # config.json "model"
_DECODER_LAYER = "mask_decoder.transformer.layers.{d}."
_ATTENTIONS = ("self_attn", "token_to_image", "image_to_token")
_PROJECTIONS = ("q", "k", "v", "out")


def _decoder_table(layer: str, attn: dict[str, str], norms: tuple[str, ...], final_norm: str,
                   mlp: tuple[str, str, str], upscale: tuple[str, str, str]) -> dict:
  table = {f"{a}.{p}": f"{layer}{attn[a]}.{p}_proj" for a in _ATTENTIONS for p in _PROJECTIONS}
  table.update({f"dec_norm{n}": f"{layer}{name}" for n, name in zip((1, 2, 3, 4), norms)})
  table.update({"dec_fc1": f"{layer}mlp.lin1", "dec_fc2": f"{layer}mlp.lin2",
                "final_norm": f"mask_decoder.transformer.{final_norm}",
                "iou_token": "mask_decoder.iou_token", "mask_tokens": "mask_decoder.mask_tokens",
                "upscale1": f"mask_decoder.{upscale[0]}", "upscale_norm":
                f"mask_decoder.{upscale[1]}", "upscale2": f"mask_decoder.{upscale[2]}"})
  table.update({f"final.{p}": f"mask_decoder.transformer.final_attn_token_to_image.{p}_proj"
                for p in _PROJECTIONS})
  for i, name in enumerate(mlp):
    table[f"hyper.{i}"] = f"mask_decoder.output_hypernetworks_mlps.{{j}}.{name}"
    table[f"iou.{i}"] = f"mask_decoder.iou_prediction_head.{name}"
  return table


_OFFICIAL_BLOCK = "image_encoder.blocks.{i}."
OFFICIAL = {
    "patch": "image_encoder.patch_embed.proj", "pos": "image_encoder.pos_embed",
    **{k: _OFFICIAL_BLOCK + v for k, v in {
        "norm1": "norm1", "qkv": "attn.qkv", "proj": "attn.proj", "rel_h": "attn.rel_pos_h",
        "rel_w": "attn.rel_pos_w", "norm2": "norm2", "lin1": "mlp.lin1",
        "lin2": "mlp.lin2"}.items()},
    "neck_conv1": "image_encoder.neck.0", "neck_norm1": "image_encoder.neck.1",
    "neck_conv2": "image_encoder.neck.2", "neck_norm2": "image_encoder.neck.3",
    "gaussian": "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "point": "prompt_encoder.point_embeddings.{j}", "not_a_point":
    "prompt_encoder.not_a_point_embed", "no_mask": "prompt_encoder.no_mask_embed",
    **_decoder_table(_DECODER_LAYER,
                     {"self_attn": "self_attn", "token_to_image": "cross_attn_token_to_image",
                      "image_to_token": "cross_attn_image_to_token"},
                     ("norm1", "norm2", "norm3", "norm4"), "norm_final_attn",
                     ("layers.0", "layers.1", "layers.2"),
                     ("output_upscaling.0", "output_upscaling.1", "output_upscaling.3")),
}
OFFICIAL_UNUSED = [r"prompt_encoder\.mask_downscaling\..*"]

_HF_BLOCK = "vision_encoder.layers.{i}."
HF = {
    "patch": "vision_encoder.patch_embed.projection", "pos": "vision_encoder.pos_embed",
    **{k: _HF_BLOCK + v for k, v in {
        "norm1": "layer_norm1", "qkv": "attn.qkv", "proj": "attn.proj", "rel_h": "attn.rel_pos_h",
        "rel_w": "attn.rel_pos_w", "norm2": "layer_norm2", "lin1": "mlp.lin1",
        "lin2": "mlp.lin2"}.items()},
    "neck_conv1": "vision_encoder.neck.conv1", "neck_norm1": "vision_encoder.neck.layer_norm1",
    "neck_conv2": "vision_encoder.neck.conv2", "neck_norm2": "vision_encoder.neck.layer_norm2",
    "gaussian": "shared_image_embedding.positional_embedding",
    "point": "prompt_encoder.point_embed.{j}", "not_a_point": "prompt_encoder.not_a_point_embed",
    "no_mask": "prompt_encoder.no_mask_embed",
    **_decoder_table(_DECODER_LAYER,
                     {a: f"cross_attn_{a}" if a != "self_attn" else a for a in _ATTENTIONS},
                     ("layer_norm1", "layer_norm2", "layer_norm3", "layer_norm4"),
                     "layer_norm_final_attn", ("proj_in", "layers.0", "proj_out"),
                     ("upscale_conv1", "upscale_layer_norm", "upscale_conv2")),
}
# The prompt encoder's copy of the Fourier matrix is tied to `shared_image_embedding`.
HF_UNUSED = [r"prompt_encoder\.mask_embed\..*",
             r"prompt_encoder\.shared_embedding\.positional_embedding"]


def infer_config(src: Source, block: str, decoder_heads: int = 8,
                 decoder_norm_eps: float = 1e-5, dtype: str | None = None) -> SamConfig:
  """The architecture from the tensors' shapes (`block`: the source's encoder block template)."""
  pos = src("pos")
  grid, width = pos.shape[-2], pos.shape[-1]
  patch = src.shape("patch.weight")
  depth = src.count(block)
  if depth == 0:
    raise ConversionError(f"no image encoder blocks ({block}*): not a SAM checkpoint")
  spans = [src.shape("rel_h", i=i) for i in range(depth)]
  global_blocks = tuple(i for i, s in enumerate(spans) if s[0] == 2 * grid - 1)
  windowed = [s[0] for s in spans if s[0] != 2 * grid - 1]
  channels = src.shape("neck_conv1.weight")[0]
  try:
    return SamConfig(
        image_size=grid * patch[-1], patch_size=patch[-1], width=width, depth=depth,
        n_heads=width // spans[0][1], mlp_dim=src.shape("lin1.weight", i=0)[0],
        window_size=(windowed[0] + 1) // 2 if windowed else grid, global_blocks=global_blocks,
        channels=channels, decoder_depth=src.count(_DECODER_LAYER),
        decoder_heads=decoder_heads, decoder_mlp_dim=src.shape("dec_fc1.weight", d=0)[0],
        attention_downsample=channels // src.shape("token_to_image.q.weight", d=0)[0],
        n_multimask=src.shape("mask_tokens.weight")[0] - 1,
        iou_head_width=src.shape("iou.0.weight")[0], decoder_norm_eps=decoder_norm_eps,
        param_dtype=dtype or str(pos.dtype), dtype=dtype or str(pos.dtype))
  except UserError as e:
    raise ConversionError(f"not a SAM this code builds: {e}") from None


def _block(src: Source, cfg: SamConfig, i: int) -> dict:
  d, f = cfg.width, cfg.mlp_dim
  qkv_w, qkv_b = src("qkv.weight", (3 * d, d), i=i), src("qkv.bias", (3 * d,), i=i)
  q, k, v = ({"kernel": w.T, "bias": b} for w, b in zip(np.split(qkv_w, 3), np.split(qkv_b, 3)))
  span = 2 * (cfg.grid if i in cfg.global_blocks else cfg.window_size) - 1
  attn = attention(q, k, v, linear(src, "proj", d, d, i=i), cfg.n_heads)
  attn["rel_pos_h"] = src("rel_h", (span, cfg.head_dim), i=i)
  attn["rel_pos_w"] = src("rel_w", (span, cfg.head_dim), i=i)
  return {"norm1": norm(src, "norm1", d, i=i), "attn": attn, "norm2": norm(src, "norm2", d, i=i),
          "mlp": {"fc1": linear(src, "lin1", f, d, i=i), "fc2": linear(src, "lin2", d, f, i=i)}}


def _stack(trees: list[dict]) -> dict:
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _conv_t(src: Source, name: str, c_in: int, c_out: int) -> dict:
  """torch ConvTranspose2d weight [C_in, C_out, 2, 2] -> [C_in, 2, 2, C_out]."""
  return {"kernel": src(f"{name}.weight", (c_in, c_out, 2, 2)).transpose(0, 2, 3, 1),
          "bias": src(f"{name}.bias", (c_out,))}


def _mlps(src: Source, name: str, widths: tuple[int, ...], n: int, **idx) -> dict:
  """`n` torch MLPs (Linear layers `name.0..2`) -> `mask_decoder.Mlps` params stacked on n."""
  out = {}
  for layer, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
    per = [linear(src, f"{name}.{layer}", c_out, c_in, **({"j": j} if n > 1 else {}))
           for j in range(n)]
    out[f"kernel_{layer}"] = np.stack([p["kernel"] for p in per])
    out[f"bias_{layer}"] = np.stack([p["bias"] for p in per])
  return out


def sam_parts(src: Source, cfg: SamConfig) -> Iterator[dict]:
  """Disk-layout parts of `models.sam.Sam`: the encoder's own params, one period per part,
  then the prompt encoder and the mask decoder."""
  d, c, dtype = cfg.width, cfg.channels, cfg.param_dtype
  p = cfg.patch_size
  yield emit("image_encoder", {
      "patch_embed": {"kernel": src("patch.weight", (d, 3, p, p)).transpose(2, 3, 1, 0),
                      "bias": src("patch.bias", (d,))},
      "pos_embed": src("pos", (cfg.grid, cfg.grid, d)),
      "neck_conv1": {"kernel": src("neck_conv1.weight", (c, d, 1, 1)).transpose(2, 3, 1, 0)},
      "neck_norm1": norm(src, "neck_norm1", c),
      "neck_conv2": {"kernel": src("neck_conv2.weight", (c, c, 3, 3)).transpose(2, 3, 1, 0)},
      "neck_norm2": norm(src, "neck_norm2", c)}, dtype)
  for s, last in enumerate(cfg.global_blocks):
    period = {"global": _block(src, cfg, last)}
    if cfg.period > 1:
      period["windowed"] = _stack([_block(src, cfg, i) for i in range(last - cfg.period + 1,
                                                                       last)])
    yield emit(("image_encoder",), period, dtype, layer=s)
  yield emit("prompt_encoder", {
      "gaussian": src("gaussian", (2, c // 2)),
      "point_embed": np.concatenate([src("point.weight", (1, c), j=j) for j in range(4)]),
      "not_a_point": src("not_a_point.weight", (1, c)),
      "no_mask": src("no_mask.weight", (1, c))}, dtype)
  inner, n_masks = c // cfg.attention_downsample, cfg.n_multimask + 1

  def attn(name, width, **idx):
    return {"q": linear(src, f"{name}.q", width, c, **idx),
            "k": linear(src, f"{name}.k", width, c, **idx),
            "v": linear(src, f"{name}.v", width, c, **idx),
            "out": linear(src, f"{name}.out", c, width, **idx)}

  decoder = {f"block_{i}": {
      "self_attn": attn("self_attn", c, d=i), "token_to_image": attn("token_to_image", inner, d=i),
      "image_to_token": attn("image_to_token", inner, d=i),
      **{f"norm{n}": norm(src, f"dec_norm{n}", c, d=i) for n in (1, 2, 3, 4)},
      "fc1": linear(src, "dec_fc1", cfg.decoder_mlp_dim, c, d=i),
      "fc2": linear(src, "dec_fc2", c, cfg.decoder_mlp_dim, d=i)} for i in range(cfg.decoder_depth)}
  decoder.update({
      "final_token_to_image": attn("final", inner), "final_norm": norm(src, "final_norm", c),
      "iou_token": src("iou_token.weight", (1, c)),
      "mask_tokens": src("mask_tokens.weight", (n_masks, c)),
      "upscale1": _conv_t(src, "upscale1", c, c // 4),
      "upscale_norm": norm(src, "upscale_norm", c // 4),
      "upscale2": _conv_t(src, "upscale2", c // 4, c // 8),
      "hypernetworks": _mlps(src, "hyper", (c, c, c, c // 8), n_masks),
      "iou_head": _mlps(src, "iou", (c, cfg.iou_head_width, cfg.iou_head_width, n_masks), 1)})
  yield emit("mask_decoder", decoder, dtype)


def convert_sam(src: Path, dst: Path, dtype: str | None = None) -> Path:
  """An official `sam_vit_*.pth` file, or an HF `SamModel` directory (config.json +
  model.safetensors) -> params checkpoint at `dst`."""
  src = Path(src)
  if src.is_dir():
    hf = read_json(src / "config.json")
    state = SafetensorsStateDict(src)
    decoder = hf.get("mask_decoder_config") or {}
    source = Source(state.keys(), state.get, "", HF, ignore=HF_UNUSED, origin=str(src))
    cfg = infer_config(source, _HF_BLOCK, decoder.get("num_attention_heads", 8),
                       decoder.get("layer_norm_eps", 1e-6), dtype)
    fmt, root, files = "hf", src, [src / "config.json", *state.files]
  elif src.is_file():
    state = load_pth(src)
    if not isinstance(state, dict):
      raise ConversionError(f"{src}: expected a state dict, got {type(state).__name__}")
    source = Source(state.keys(), lambda key: to_numpy(state[key]), "", OFFICIAL,
                    ignore=OFFICIAL_UNUSED, origin=str(src))
    cfg = infer_config(source, _OFFICIAL_BLOCK, dtype=dtype)
    fmt, root, files = "segment_anything", src.parent, [src]
  else:
    raise ConversionError(f"{src}: no such file or directory (a sam_vit_*.pth file or an HF "
                          "SamModel directory)")
  return source_files.write(dst, sam_parts(source, cfg), {"model": SAM_MODEL, **cfg.to_dict()},
                            None, fmt, root, files)
