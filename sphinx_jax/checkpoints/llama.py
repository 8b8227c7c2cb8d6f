"""LLaMA weights from Meta (`consolidated.NN.pth` + `params.json`) and HF (safetensors) layouts.

Both sources are read through Meta's key names (`layers.{i}.attention.wq.weight`, ...) and turned
into our params one layer at a time. HF stores wq/wk permuted for rotate-half RoPE; we keep
Meta's interleaved layout, so HF's permutation is undone here.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from sphinx_jax.checkpoints import source_files
from sphinx_jax.checkpoints.torch_io import (ConversionError, SafetensorsStateDict,
                                             ShardedStateDict, read_json, shard_files)
from sphinx_jax.configs import LlamaConfig, checkpoint_config

log = logging.getLogger(__name__)

# Model-parallel split dimension of each Meta weight (fairscale Column/RowParallelLinear and
# ParallelEmbedding); everything else is replicated on every shard.
# Keys may carry LLaMA2-Accessory's `llma.` prefix; nothing else (towers are replicated).
_SPLIT_DIMS = (
    (r"(llma\.)?tok_embeddings\.weight", 1),
    (r"(llma\.)?layers\.\d+\.attention\.w[qkv]\.weight", 0),
    (r"(llma\.)?layers\.\d+\.feed_forward\.w[13]\.weight", 0),
    (r"(llma\.)?layers\.\d+\.attention\.wo\.weight", 1),
    (r"(llma\.)?layers\.\d+\.feed_forward\.w2\.weight", 1),
    (r"(llma\.)?output\.weight", 0),
)


def meta_split_dim(key: str) -> int | None:
  for pattern, dim in _SPLIT_DIMS:
    if re.fullmatch(pattern, key):
      return dim
  return None


Getter = Callable[[str, tuple], np.ndarray]


def llm_parts(get: Getter, cfg: LlamaConfig, prefix: str = "", root: str = "llm",
              dtype=None) -> Iterator[dict]:
  """Disk-layout param parts ({root: ...}) from Meta-named tensors, one layer per part."""
  d, h, kv, hd, f, v = cfg.dim, cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.hidden_dim, \
      cfg.vocab_size

  def w(key, shape, transform=lambda a: a):
    """One tensor, cast and laid out for us, in a single contiguous copy."""
    array = get(prefix + key, shape)
    array = array if dtype is None else array.astype(dtype, copy=False)
    return np.ascontiguousarray(transform(array))

  # The two vocabulary-sized tensors go in parts of their own: each part is held in RAM once.
  yield {root: {"tok_embeddings": {"embedding": w("tok_embeddings.weight", (v, d))}}}
  yield {root: {"norm": {"scale": w("norm.weight", (d,))},
                "output": {"kernel": w("output.weight", (v, d), np.transpose)}}}
  for i in range(cfg.n_layers):
    p = f"layers.{i}."
    layer = {
        "attention_norm": {"scale": w(p + "attention_norm.weight", (d,))},
        "ffn_norm": {"scale": w(p + "ffn_norm.weight", (d,))},
        "attention": {
            "wq": w(p + "attention.wq.weight", (h * hd, d), lambda a: a.T.reshape(d, h, hd)),
            "wk": w(p + "attention.wk.weight", (kv * hd, d), lambda a: a.T.reshape(d, kv, hd)),
            "wv": w(p + "attention.wv.weight", (kv * hd, d), lambda a: a.T.reshape(d, kv, hd)),
            "wo": w(p + "attention.wo.weight", (d, h * hd), lambda a: a.T.reshape(h, hd, d)),
        },
        "feed_forward": {
            "w1": w(p + "feed_forward.w1.weight", (f, d), np.transpose),
            "w3": w(p + "feed_forward.w3.weight", (f, d), np.transpose),
            "w2": w(p + "feed_forward.w2.weight", (d, f), np.transpose),
        },
    }
    yield {root: {"layers": {str(i): layer}}}


# ---------------------------------------------------------------------------------------------
# Meta format


def meta_config(params_json: Path, vocab_size: int, dtype: str) -> LlamaConfig:
  p = read_json(params_json)
  try:
    return LlamaConfig(
        vocab_size=vocab_size, dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"],
        n_kv_heads=p.get("n_kv_heads"), multiple_of=p.get("multiple_of", 256),
        ffn_dim_multiplier=p.get("ffn_dim_multiplier"), norm_eps=p.get("norm_eps", 1e-5),
        rope_theta=p.get("rope_theta", 10000.0), param_dtype=dtype, dtype=dtype)
  except KeyError as e:
    raise ConversionError(f"{params_json}: missing field {e}") from None


def convert_meta(src: Path, dst: Path, dtype: str | None = None,
                 tokenizer: Path | None = None, quantize: str | None = None) -> Path:
  """Meta LLaMA-2 directory -> params checkpoint. Shards are merged per weight, layer by layer."""
  files = shard_files(src, r"consolidated\.(\d+)\.pth")
  if not files:
    raise ConversionError(f"{src}: no consolidated.NN.pth files")
  state = ShardedStateDict(files, meta_split_dim, config_source=str(src / "params.json"))
  (vocab_size, _), src_dtype = state.shard0_info("tok_embeddings.weight")
  dtype = dtype or src_dtype
  cfg = meta_config(src / "params.json", vocab_size, dtype)
  parts = llm_parts(state.get, cfg, dtype=dtype)
  return source_files.write(dst, parts, checkpoint_config(cfg),
                            tokenizer or find_tokenizer(src), "meta", src,
                            [*files, src / "params.json"], quantize)


# ---------------------------------------------------------------------------------------------
# HF format

_HF_NAMES = (
    ("model.embed_tokens.weight", "tok_embeddings.weight"),
    ("model.norm.weight", "norm.weight"),
    ("lm_head.weight", "output.weight"),
)
_HF_LAYER_NAMES = (
    ("self_attn.q_proj", "attention.wq"), ("self_attn.k_proj", "attention.wk"),
    ("self_attn.v_proj", "attention.wv"), ("self_attn.o_proj", "attention.wo"),
    ("mlp.gate_proj", "feed_forward.w1"), ("mlp.up_proj", "feed_forward.w3"),
    ("mlp.down_proj", "feed_forward.w2"), ("input_layernorm", "attention_norm"),
    ("post_attention_layernorm", "ffn_norm"),
)


def hf_config(config: dict, dtype: str) -> LlamaConfig:
  """HF LlamaConfig dict -> ours. Linear RoPE scaling is supported; other kinds are refused."""
  rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind not in ("default", "linear"):
    raise ConversionError(f"RoPE scaling {kind!r} is not supported (only linear)")
  return LlamaConfig(
      vocab_size=config["vocab_size"], dim=config["hidden_size"],
      n_layers=config["num_hidden_layers"], n_heads=config["num_attention_heads"],
      n_kv_heads=config.get("num_key_value_heads"), ffn_dim=config["intermediate_size"],
      norm_eps=config.get("rms_norm_eps", 1e-6),
      rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
      rope_scaling=rope.get("factor", 1.0) if kind == "linear" else 1.0,
      max_seq_len=config.get("max_position_embeddings", 4096), param_dtype=dtype, dtype=dtype)


def hf_getter(get: Getter, cfg: LlamaConfig, tied: bool) -> Getter:
  """Meta-named getter over HF-named tensors, undoing HF's rotate-half permutation of wq/wk."""
  to_hf = {meta: hf for hf, meta in _HF_NAMES}
  layer_to_hf = {meta: hf for hf, meta in _HF_LAYER_NAMES}
  if tied:
    to_hf["output.weight"] = "model.embed_tokens.weight"

  def meta_get(key: str, shape: tuple) -> np.ndarray:
    if key in to_hf:
      return get(to_hf[key], shape)
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key)
    name = layer_to_hf[m.group(2)]
    array = get(f"model.layers.{m.group(1)}.{name}.weight", shape)
    if m.group(2) in ("attention.wq", "attention.wk"):
      heads = shape[0] // cfg.head_dim
      array = array.reshape(heads, 2, cfg.head_dim // 2, -1).transpose(0, 2, 1, 3).reshape(shape)
    return array

  return meta_get


def convert_hf(src: Path, dst: Path, dtype: str | None = None,
               tokenizer: Path | None = None, quantize: str | None = None) -> Path:
  """HF Llama directory (config.json + safetensors) -> params checkpoint."""
  hf = read_json(src / "config.json")
  state = SafetensorsStateDict(src)
  dtype = dtype or state.dtype_name("model.embed_tokens.weight")
  try:
    cfg = hf_config(hf, dtype)
  except KeyError as e:
    raise ConversionError(f"{src / 'config.json'}: missing field {e}") from None
  tied = hf.get("tie_word_embeddings", False) or "lm_head.weight" not in state.keys()
  parts = llm_parts(hf_getter(state.get, cfg, tied), cfg, dtype=dtype)
  return source_files.write(dst, parts, checkpoint_config(cfg),
                            tokenizer or find_tokenizer(src), "hf", src,
                            [src / "config.json", *state.files], quantize)


def find_tokenizer(src: Path) -> Path | None:
  for candidate in (src / "tokenizer.model", src.parent / "tokenizer.model"):
    if candidate.is_file():
      return candidate
  log.warning("no tokenizer.model in %s or its parent: the checkpoint will have none", src)
  return None
