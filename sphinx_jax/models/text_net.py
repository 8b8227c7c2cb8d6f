"""The LLM alone as a trainable network: text-only training (LLaMA-2 pre-training or
fine-tuning on text) through SPHINX's train step, loss, checkpoints and export.

Its params sit under 'llm' as they do in SphinxNet, so what it saves is an LLM checkpoint (the
layout `launch convert llama` writes, which `LanguageModel` reads and a SPHINX run can take its
LLM from), and a converted LLaMA-2 checkpoint is a valid start for it.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models.llama import Llama


class TextNet(nn.Module):
  cfg: LlamaConfig

  def setup(self):
    self.llm = Llama(self.cfg)

  def __call__(self, tokens, image_mask=None, images=None, *, positions=None, segment_ids=None,
               head: bool = True):
    """Logits (float32 [B, T, V]) and the cache, SphinxNet's signature; a text batch has no
    images (its image_mask is all False)."""
    del image_mask
    if images is not None:
      raise ValueError("TextNet takes no images")
    return self.llm(tokens, positions=positions, segment_ids=segment_ids, head=head)


def init_params(cfg: LlamaConfig, rng: jax.Array):
  """Boxed (logically partitioned) params {'params': {'llm': ...}}."""
  return TextNet(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))
