"""BLIP-2 weights from HF Blip2Model names (SPHINX: `llma.qformer.{vision_model,qformer,
query_tokens}`): the EVA ViT-g and the Q-Former's query path.

The Q-Former's text-path FFN (`intermediate`, `output`) is skipped: SPHINX feeds no text.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator

from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.checkpoints.vision import (Getter, Source, attention, emit, infer_heads, linear,
                                          norm, root_path, under)
from sphinx_jax.checkpoints.vision_vit import hf_blip2_vit
from sphinx_jax.configs import Blip2Config, QFormerConfig

_LAYER = "qformer.encoder.layer.{i}."
HF_QFORMER = {
    "query_tokens": "query_tokens", "ln_embed": "qformer.layernorm",
    **under(_LAYER, {
        "self_q": "attention.attention.query", "self_k": "attention.attention.key",
        "self_v": "attention.attention.value", "self_out": "attention.output.dense",
        "self_norm": "attention.output.LayerNorm",
        "cross_q": "crossattention.attention.query", "cross_k": "crossattention.attention.key",
        "cross_v": "crossattention.attention.value", "cross_out": "crossattention.output.dense",
        "cross_norm": "crossattention.output.LayerNorm",
        "fc1": "intermediate_query.dense", "fc2": "output_query.dense",
        "ffn_norm": "output_query.LayerNorm"}),
}
HF_QFORMER_IGNORE = [
    r"qformer\.encoder\.layer\.\d+\.(intermediate|output)\..*",  # text-path FFN
    r"(vision_model|language_projection|language_model)\..*",  # other parts of Blip2Model
]


def hf_blip2(keys: Iterable[str], get: Getter, prefix: str = "", *, vision_eps: float = 1e-6,
             qformer_eps: float = 1e-12, vision_heads: int | None = None,
             qformer_heads: int | None = None, root="qformer", dtype=None):
  """HF Blip2Model (SPHINX: prefix 'llma.qformer.') -> `qformer.Blip2` config and parts."""
  keys = list(keys)
  vision_cfg, vision = hf_blip2_vit(keys, get, prefix + "vision_model.", eps=vision_eps,
                                    n_heads=vision_heads, root=(*root_path(root), "vision"),
                                    dtype=dtype)
  qformer_cfg, qformer = hf_qformer(keys, get, prefix, eps=qformer_eps, n_heads=qformer_heads,
                                    root=(*root_path(root), "qformer"), dtype=dtype)
  return Blip2Config(vision_cfg, qformer_cfg), itertools.chain(vision, qformer)


def hf_qformer(keys: Iterable[str], get: Getter, prefix: str = "", *, eps: float = 1e-12,
               n_heads: int | None = None, root=("qformer", "qformer"), dtype=None):
  """The Q-Former of an HF Blip2Model (`qformer.*` and `query_tokens` under `prefix`)."""
  src = Source(keys, get, prefix, HF_QFORMER, ignore=HF_QFORMER_IGNORE)
  depth = src.count(_LAYER)
  cross = [i for i in range(depth) if src.has("cross_q.weight", i=i)]
  freq = cross[1] - cross[0] if len(cross) > 1 else depth
  if not cross or cross != list(range(0, depth, freq)):
    raise ConversionError(f"{prefix}qformer: cross-attention in layers {cross} of {depth}; "
                          "expected layers 0, f, 2f, ...")
  queries = src("query_tokens")
  width = queries.shape[-1]
  dtype_name = dtype or str(queries.dtype)
  cfg = QFormerConfig(
      width=width, depth=depth, n_heads=infer_heads(width, n_heads),
      mlp_dim=src.shape("fc1.bias", i=0)[0], n_queries=queries.size // width,
      encoder_width=src.shape("cross_k.weight", i=0)[1], cross_attention_frequency=freq,
      norm_eps=eps, param_dtype=dtype_name, dtype=dtype_name)
  return cfg, qformer_parts(src, cfg, root, dtype)


def _attention(src: Source, kind: str, width: int, kv_width: int, n_heads: int, i: int) -> dict:
  return attention(linear(src, f"{kind}_q", width, width, i=i),
                   linear(src, f"{kind}_k", width, kv_width, i=i),
                   linear(src, f"{kind}_v", width, kv_width, i=i),
                   linear(src, f"{kind}_out", width, width, i=i), n_heads)


def qformer_parts(src: Source, cfg: QFormerConfig, root, dtype=None) -> Iterator[dict]:
  """Disk-layout parts of a `qformer.QFormer`: unstacked params, then one layer group per part."""
  w, f = cfg.width, cfg.cross_attention_frequency
  yield emit(root, {"query_tokens": src("query_tokens", (cfg.n_queries, w)),
                    "ln_embed": norm(src, "ln_embed", w)}, dtype)
  for g in range(cfg.depth // f):
    group = {}
    for r in range(f):
      i = g * f + r
      layer = {"self_attn": _attention(src, "self", w, w, cfg.n_heads, i),
               "self_norm": norm(src, "self_norm", w, i=i),
               "fc1": linear(src, "fc1", cfg.mlp_dim, w, i=i),
               "fc2": linear(src, "fc2", w, cfg.mlp_dim, i=i),
               "ffn_norm": norm(src, "ffn_norm", w, i=i)}
      if r == 0:
        layer["cross_attn"] = _attention(src, "cross", w, cfg.encoder_width, cfg.n_heads, i)
        layer["cross_norm"] = norm(src, "cross_norm", w, i=i)
      group[f"layer_{r}"] = layer
    yield emit(root, group, dtype, layer=g)
