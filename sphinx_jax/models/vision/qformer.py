"""BLIP-2's Q-Former (HF Blip2QFormerModel, query path) and the BLIP-2 tower SPHINX uses.

SPHINX feeds only the 32 learned queries (no text), so only the query FFN (`intermediate_query`,
`output_query`) exists here. Layers 0, f, 2f, ... cross-attend to the image features, so the
scan runs over groups of f = cross_attention_frequency layers (stacked params under `layers`,
one `layer_{r}` subtree per position in the group).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from sphinx_jax.configs import Blip2Config, QFormerConfig
from sphinx_jax.models.layers import dense, kernel_init, layer_norm, scanned
from sphinx_jax.models.vision.vit import ACTIVATIONS, Attention, ViT


class QFormerLayer(nn.Module):
  """BERT-style post-norm layer: x = LN(x + attn(x)) for self- (and cross-) attention, then
  x = LN(x + fc2(gelu(fc1(x))))."""

  cfg: QFormerConfig
  cross: bool

  @nn.compact
  def __call__(self, x, image):
    cfg = self.cfg
    norm = lambda name: layer_norm(cfg, cfg.norm_eps, name)
    x = norm("self_norm")(x + Attention(cfg, name="self_attn")(x))
    if self.cross:
      x = norm("cross_norm")(x + Attention(cfg, name="cross_attn")(x, image))
    hidden = ACTIVATIONS["gelu"](dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "fc1")(x))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_mlp"))
    x = norm("ffn_norm")(x + dense(cfg, cfg.width, ("mlp", "embed"), "fc2")(hidden))
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class QFormerGroup(nn.Module):
  """cross_attention_frequency consecutive layers, the first one cross-attending; scanned."""

  cfg: QFormerConfig

  @nn.compact
  def __call__(self, x, image):
    for r in range(self.cfg.cross_attention_frequency):
      x = QFormerLayer(self.cfg, cross=r == 0, name=f"layer_{r}")(x, image)
    return x, None


class QFormer(nn.Module):
  """image features [B, N, encoder_width] -> query features [B, n_queries, width].

  Params: query_tokens, ln_embed, layers (stacked groups).
  """

  cfg: QFormerConfig

  @nn.compact
  def __call__(self, image):
    cfg = self.cfg
    queries = self.param("query_tokens", kernel_init(("queries", "embed")),
                         (cfg.n_queries, cfg.width), cfg.param_dtype)
    x = jnp.broadcast_to(queries.astype(cfg.dtype), (image.shape[0], cfg.n_queries, cfg.width))
    x = layer_norm(cfg, cfg.norm_eps, "ln_embed")(x)
    groups = cfg.depth // cfg.cross_attention_frequency
    x, _ = scanned(QFormerGroup, cfg, groups, in_axes=(nn.broadcast,))(cfg, name="layers")(
        x, image.astype(cfg.dtype))
    return x


class Blip2(nn.Module):
  """pixels [B, 224, 224, 3] -> [B, 32, 768]: Blip2Model.get_qformer_features, as SPHINX uses it.

  Params: vision (EVA ViT-g), qformer.
  """

  cfg: Blip2Config

  @nn.compact
  def __call__(self, pixels):
    return QFormer(self.cfg.qformer, name="qformer")(ViT(self.cfg.vision, name="vision")(pixels))
