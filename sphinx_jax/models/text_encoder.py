"""A small text encoder for the towers' own pre-training (CLIP-style image-text contrast).

SPHINX's towers arrive pre-trained; the synthetic world has no pre-trained towers, so the
embedded default trains them first (train/towers.py) against this encoder. It is the ViT's
pre-norm block over token embeddings plus learned positions, attending to valid tokens only
(bidirectional, unlike CLIP's causal one: nothing here generates), mean-pooled over them.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import TextConfig
from sphinx_jax.models.layers import kernel_init, layer_norm, scanned
from sphinx_jax.models.vision.vit import Block
from sphinx_jax.util.errors import UserError


class TextEncoder(nn.Module):
  """tokens int [B, L], valid bool [B, L] -> [B, width].

  Params: embed, pos_embed, layers (stacked), ln_final.
  """

  cfg: TextConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
    cfg = self.cfg
    if tokens.shape[1] > cfg.max_len:
      raise UserError(f"text of {tokens.shape[1]} tokens, more than max_len={cfg.max_len}")
    x = nn.Embed(cfg.vocab_size, cfg.width, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                 embedding_init=kernel_init(("vocab", "embed")), name="embed")(tokens)
    pos = self.param("pos_embed", kernel_init(("positions", "embed")), (cfg.max_len, cfg.width),
                     cfg.param_dtype)
    x = x + pos[:tokens.shape[1]].astype(cfg.dtype)
    mask = valid[:, None, None, :]
    x, _ = scanned(Block, cfg, cfg.depth, in_axes=(nn.broadcast,))(cfg, name="layers")(x, mask)
    x = layer_norm(cfg, cfg.norm_eps, "ln_final")(x)
    weights = valid[..., None].astype(x.dtype)
    return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1)
