"""The LLM of a params checkpoint as an HF Llama directory (the inverse of `convert hf`).

Writes `config.json` (LlamaForCausalLM), safetensors shards of at most SHARD_BYTES with their
index, the tokenizer (`tokenizer.model` + `tokenizer_config.json`) and `generation_config.json`.
The weights are streamed a layer at a time (peak host memory about one shard), in their stored
dtype, with Meta's interleaved RoPE layout of wq / wk permuted to HF's rotate-half, as HF's own
`convert_llama_weights_to_hf.py` does. The vision towers and the mixer of a SPHINX checkpoint
have no HF Llama form and are left out. The directory appears only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors.numpy import save_file

from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import LlamaConfig
from sphinx_jax.util.files import building

SHARD_BYTES = 2 << 30
BOS_ID, EOS_ID = 1, 2  # LLaMA's sentencepiece ids


def llm_config(src: Path) -> LlamaConfig:
  """The LLM config of a SPHINX or LLM params checkpoint."""
  cfg = params_io.read_model_config(src)
  return cfg if isinstance(cfg, LlamaConfig) else cfg.llm


def hf_config(cfg: LlamaConfig, dtype: np.dtype) -> dict:
  config = {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim,
      "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
      "rope_theta": cfg.rope_theta, "max_position_embeddings": cfg.max_seq_len,
      "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
      "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "torch_dtype": np.dtype(dtype).name,
  }
  if cfg.rope_scaling != 1.0:
    config["rope_scaling"] = {"rope_type": "linear", "factor": cfg.rope_scaling}
  return config


def _to_hf_rope(w: np.ndarray, heads: int) -> np.ndarray:
  """[heads * head_dim, d] in Meta's interleaved pairs -> HF's rotate-half halves."""
  rows, d = w.shape
  return w.reshape(heads, rows // heads // 2, 2, d).transpose(0, 2, 1, 3).reshape(rows, d)


def _layer_tensors(layer: dict, cfg: LlamaConfig, i: int) -> dict[str, np.ndarray]:
  """One stored layer (disk layout) as HF's named [out, in] tensors."""
  d, p = cfg.dim, f"model.layers.{i}."
  a, f = layer["attention"], layer["feed_forward"]
  flat = lambda w: w.reshape(d, -1).T  # noqa: E731 -- [d, heads, head_dim] -> [out, d]
  return {
      p + "self_attn.q_proj.weight": _to_hf_rope(flat(a["wq"]), cfg.n_heads),
      p + "self_attn.k_proj.weight": _to_hf_rope(flat(a["wk"]), cfg.kv_heads),
      p + "self_attn.v_proj.weight": flat(a["wv"]),
      p + "self_attn.o_proj.weight": a["wo"].reshape(-1, d).T,
      p + "mlp.gate_proj.weight": f["w1"].T, p + "mlp.up_proj.weight": f["w3"].T,
      p + "mlp.down_proj.weight": f["w2"].T,
      p + "input_layernorm.weight": layer["attention_norm"]["scale"],
      p + "post_attention_layernorm.weight": layer["ffn_norm"]["scale"],
  }


def _tensors(src: Path, cfg: LlamaConfig, stored: dict) -> Iterator[dict[str, np.ndarray]]:
  """HF-named tensors, one group per read: the embedding, the head and norm, each layer."""
  def read(prefix: str) -> dict:
    keys = {k: v for k, v in stored.items() if k.startswith(prefix)}
    if not keys:
      raise params_io.CheckpointError(f"{src}: no {prefix!r} parameters")
    tree: dict = {}
    for key, value in params_io.read_leaves(src, keys).items():
      params_io.put_leaf(tree, key[len(prefix):], value)
    return tree

  yield {"model.embed_tokens.weight": read("llm/tok_embeddings/")["embedding"]}
  yield {"model.norm.weight": read("llm/norm/")["scale"],
         "lm_head.weight": read("llm/output/")["kernel"].T}
  for i in range(cfg.n_layers):
    yield _layer_tensors(read(f"llm/layers/{i}/"), cfg, i)


def export_hf(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
  """Write the LLM of the params checkpoint `src` as an HF Llama directory `dst`."""
  src, dst = Path(src), Path(os.path.abspath(dst))
  if dst.exists():
    raise params_io.CheckpointError(f"{dst}: already exists; refusing to overwrite")
  cfg = llm_config(src)
  stored = params_io.stored_shapes(src)
  dtype = stored.get("llm/tok_embeddings/embedding", (None, None))[1]
  if dtype is None:
    raise params_io.CheckpointError(f"{src}: no LLM parameters (llm/tok_embeddings)")
  with building(dst) as tmp:
    weight_map = _write_shards(tmp, _tensors(src, cfg, stored))
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, dtype), indent=2))
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": False}, indent=2))
    tokenizer = params_io.tokenizer_path(src)
    if tokenizer is not None:
      shutil.copyfile(tokenizer, tmp / "tokenizer.model")
      (tmp / "tokenizer_config.json").write_text(json.dumps(
          {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": True,
           "model_max_length": cfg.max_seq_len}, indent=2))
    if len(set(weight_map.values())) > 1:
      total = sum(int(np.prod(s)) * t.itemsize for k, (s, t) in stored.items()
                  if k.startswith("llm/"))
      (tmp / "model.safetensors.index.json").write_text(json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
  return dst


def _write_shards(directory: Path, groups: Iterator[dict]) -> dict[str, str]:
  """Save the groups in shards of about SHARD_BYTES ('model.safetensors' when one is enough,
  else 'model-0000i-of-0000n.safetensors', renamed once n is known); the weight map."""
  shards: list[list[str]] = []
  shard: dict[str, np.ndarray] = {}

  def flush():
    name = f"part-{len(shards)}.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in shard.items()}, str(directory / name),
              metadata={"format": "pt"})
    shards.append(list(shard))
    shard.clear()

  for group in groups:
    size = sum(v.nbytes for v in shard.values())
    if shard and size + sum(v.nbytes for v in group.values()) > SHARD_BYTES:
      flush()
    shard.update(group)
  flush()
  n = len(shards)
  weight_map = {}
  for i, keys in enumerate(shards):
    name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
    (directory / f"part-{i}.safetensors").rename(directory / name)
    weight_map.update(dict.fromkeys(keys, name))
  return weight_map
