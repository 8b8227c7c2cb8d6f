"""`LanguageModel`: a LLaMA checkpoint behind a small Python API (logits, generation)."""
from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import LlamaConfig
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.inference.generate import generate, trim
from sphinx_jax.inference.sampling import Sampling
from sphinx_jax.models.batch import bucketed
from sphinx_jax.models.llama import Llama, init_cache, init_params
from sphinx_jax.util.errors import UserError

PAD_ID = 0
DEFAULT_EOS_ID = 2


class LanguageModel:
  """LLaMA-2 / TinyLlama: `config` (LlamaConfig), `params` (pytree), optional `tokenizer`."""

  def __init__(self, config: LlamaConfig, params, tokenizer: Tokenizer | None = None,
               mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.mesh = mesh if mesh is not None else sharding.make_mesh()

  @classmethod
  def from_pretrained(cls, ckpt_dir: str | os.PathLike, *, dtype: str | None = None,
                      quantize: str | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> "LanguageModel":
    """Load the `llm` of a checkpoint (from `launch convert` or training), sharded on `mesh`
    (default: all devices on the fsdp axis). `dtype` overrides param and compute dtypes.
    `quantize` ('int8' | 'int4' | 'nf4'): the matmul weights quantized as they load (a quantized
    checkpoint loads quantized without it; models.quantization)."""
    config = params_io.read_config(ckpt_dir)
    if "llm" not in config:
      raise params_io.CheckpointError(f"{ckpt_dir}/config.json: no 'llm' section")
    try:
      cfg = LlamaConfig.from_dict(config["llm"])
    except (ValueError, TypeError, AttributeError) as e:  # fields unknown, missing, mistyped
      raise params_io.CheckpointError(f"{ckpt_dir}/config.json: not an LLM config ({e})") \
          from None
    if dtype is not None:
      cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    params, tokenizer = load_sharded(ckpt_dir, lambda k: init_params(cfg, k), mesh, "llm",
                                     quantize)
    return cls(cfg, params, tokenizer, mesh)

  @property
  def eos_id(self) -> int:
    return eos_of(self.tokenizer)

  def logits(self, token_ids: Sequence[int]) -> np.ndarray:
    """float32 [len(token_ids), vocab]: row i is the distribution of token i+1."""
    tokens, _ = self._pad_batch([list(token_ids)])
    with sharding.use_mesh(self.mesh):
      logits = _forward(self.params, sharding.put_batch(tokens, self.mesh), cfg=self.config)
      logits = multihost_utils.process_allgather(logits, tiled=True)
    return np.asarray(logits[0, :len(token_ids)])

  def generate_ids(self, token_ids, max_new_tokens: int = 64, *, temperature: float = 0.0,
                   top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                   stop_sequences: Sequence[Sequence[int]] = (), eos_id: int | None = -1):
    """New token ids for one prompt (list of ids) or a batch (list of lists).

    Stops at EOS (`eos_id`; default the tokenizer's, None disables it), at a stop sequence, or
    after `max_new_tokens`; the EOS or stop sequence itself is not returned.
    """
    single = len(token_ids) == 0 or isinstance(token_ids[0], (int, np.integer))
    prompts = [list(token_ids)] if single else [list(p) for p in token_ids]
    if any(len(p) == 0 for p in prompts):
      raise UserError("every prompt needs at least one token (BOS)")
    eos_id = self.eos_id if eos_id == -1 else eos_id
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    tokens, lengths = self._pad_batch(prompts)
    budget = tokens.shape[1] + max_new_tokens
    if max(lengths) + max_new_tokens > self.config.max_seq_len:
      raise UserError(f"prompt ({max(lengths)}) + max_new_tokens ({max_new_tokens}) exceeds "
                       f"max_seq_len {self.config.max_seq_len}")
    with sharding.use_mesh(self.mesh):
      out = _generate(self.params, sharding.put_batch(tokens, self.mesh),
                      sharding.put_batch(lengths, self.mesh), jax.random.key(seed),
                      cfg=self.config, cache_len=budget, max_new_tokens=max_new_tokens,
                      sampling=Sampling(temperature, top_p, top_k), eos_id=eos_id, stops=stops)
      out = multihost_utils.process_allgather(out, tiled=True)
    rows = [trim(r, eos_id, stops) for r in out[:len(prompts)]]
    return rows[0] if single else rows

  def _pad_batch(self, prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return pad_rows(prompts, sharding.batch_multiple(self.mesh))


def load_sharded(ckpt_dir, init, mesh: jax.sharding.Mesh, subtree: str | None = None,
                 quantize: str | None = None):
  """({'params': ...} restored straight into the shardings `init`'s logical axes give on `mesh`,
  the checkpoint's tokenizer or None). `subtree`: load only that part of the stored params;
  `quantize`: params_io.load's."""
  abstract, _ = sharding.param_shardings(init, mesh, jax.random.key(0))
  target = abstract["params"] if subtree is None else {subtree: abstract["params"]}
  params = params_io.load(ckpt_dir, target, quantize)
  tok_path = params_io.tokenizer_path(ckpt_dir)
  return ({"params": params if subtree is None else params[subtree]},
          Tokenizer(tok_path) if tok_path else None)


def eos_of(tokenizer: Tokenizer | None) -> int:
  return tokenizer.eos_id if tokenizer else DEFAULT_EOS_ID


def pad_rows(prompts: list[list[int]], multiple: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pad prompts to a bucketed length (models.batch.bucketed, the one rule), and the batch
  to a multiple of `multiple` rows (to shard over the mesh); returns tokens [B, T] and lengths
  [B] (1 for padding rows)."""
  batch = -(-len(prompts) // multiple) * multiple
  length = bucketed(max(len(p) for p in prompts))
  tokens = np.full((batch, length), PAD_ID, np.int32)
  lengths = np.ones((batch,), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, :len(p)] = p
    lengths[i] = len(p)
  return tokens, lengths


@functools.partial(jax.jit, static_argnames=("cfg",))
def _forward(params, tokens, *, cfg: LlamaConfig):
  return Llama(cfg).apply(params, tokens)[0]


@functools.partial(jax.jit, static_argnames=("cfg", "cache_len", "max_new_tokens", "sampling",
                                             "eos_id", "stops"))
def _generate(params, tokens, lengths, key, *, cfg, cache_len, max_new_tokens, sampling, eos_id,
              stops):
  return generate(Llama(cfg), params, {"tokens": tokens}, lengths, key,
                  cache=init_cache(cfg, tokens.shape[0], cache_len), max_new_tokens=max_new_tokens,
                  sampling=sampling, eos_id=eos_id, stop_sequences=stops)
