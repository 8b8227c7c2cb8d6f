"""PyTorch references for the LLaMA tests: tiny HF models and the files of each format.

The Meta layout is written here independently of our converter: HF's conversion script permutes
Meta's wq/wk rows for rotate-half RoPE (`view(h, hd/2, 2, d).transpose(1, 2)`); the inverse
below restores Meta's interleaved rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from sphinx_jax.checkpoints import llama as llama_ckpt
from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.torch_io import to_numpy
from tests.tokenizer_refs import train_tokenizer  # noqa: F401  (the LLaMA tests use it from here)


def hf_llama(kv_heads: int = 4, layers: int = 2, vocab: int = 256, seed: int = 0,
             dim: int = 64, heads: int = 4, ffn: int = 192) -> LlamaForCausalLM:
  torch.manual_seed(seed)
  config = HFLlamaConfig(
      vocab_size=vocab, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
      eos_token_id=2, pad_token_id=0, attn_implementation="eager")
  model = LlamaForCausalLM(config).eval()
  with torch.no_grad():  # HF inits norms to 1; randomise them so the test sees their weights
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
  return model


def our_params(model: LlamaForCausalLM):
  """(LlamaConfig, params) for an HF model, through the HF key mapping, in memory."""
  cfg = llama_ckpt.hf_config(model.config.to_dict(), "float32")
  state = {k: to_numpy(v) for k, v in model.state_dict().items()}
  getter = llama_ckpt.hf_getter(lambda k, shape: state[k], cfg, tied=False)
  params = params_io.assemble(llama_ckpt.llm_parts(getter, cfg))["llm"]
  return cfg, {"params": params}


def hf_logits(model: LlamaForCausalLM, ids) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(ids))[None]).logits[0].numpy()


def _meta_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
  """HF rotate-half rows -> Meta interleaved rows (inverse of HF's conversion permute)."""
  out_dim, in_dim = w.shape
  return w.view(heads, 2, out_dim // heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def meta_state_dict(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
  c = model.config
  sd = model.state_dict()
  out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"],
         "norm.weight": sd["model.norm.weight"], "output.weight": sd["lm_head.weight"],
         "rope.freqs": torch.zeros(c.hidden_size // c.num_attention_heads // 2)}
  names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
           "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
           "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
           "mlp.down_proj": "feed_forward.w2", "input_layernorm": "attention_norm",
           "post_attention_layernorm": "ffn_norm"}
  for i in range(c.num_hidden_layers):
    for hf, meta in names.items():
      w = sd[f"model.layers.{i}.{hf}.weight"]
      if meta == "attention.wq":
        w = _meta_rows(w, c.num_attention_heads)
      elif meta == "attention.wk":
        w = _meta_rows(w, c.num_key_value_heads)
      out[f"layers.{i}.{meta}.weight"] = w
  return out


# Model-parallel layout of Meta shards, written out for the test (fairscale's split dims).
_COLUMN = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3",
           "output")
_ROW = ("attention.wo", "feed_forward.w2", "tok_embeddings")


def split_for_model_parallel(sd: dict[str, torch.Tensor], n: int) -> list[dict]:
  shards = [{} for _ in range(n)]
  for key, w in sd.items():
    name = key.removesuffix(".weight").split(".", 2)[-1] if key.startswith("layers.") \
        else key.removesuffix(".weight")
    if name in _COLUMN:
      pieces = w.chunk(n, dim=0)
    elif name in _ROW:
      pieces = w.chunk(n, dim=1)
    else:
      pieces = [w] * n
    for shard, piece in zip(shards, pieces):
      shard[key] = piece.clone()
  return shards


def write_meta(model: LlamaForCausalLM, path: Path, n_shards: int = 2,
               tokenizer: Path | None = None) -> Path:
  path.mkdir(parents=True)
  c = model.config
  for i, shard in enumerate(split_for_model_parallel(meta_state_dict(model), n_shards)):
    torch.save(shard, path / f"consolidated.{i:02d}.pth")
  params = {"dim": c.hidden_size, "n_layers": c.num_hidden_layers,
            "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
            "multiple_of": 32, "norm_eps": c.rms_norm_eps, "vocab_size": -1}
  (path / "params.json").write_text(json.dumps(params))
  if tokenizer is not None:
    (path / "tokenizer.model").write_bytes(tokenizer.read_bytes())
  return path


def write_hf(model: LlamaForCausalLM, path: Path) -> Path:
  model.save_pretrained(path, safe_serialization=True)
  return path
