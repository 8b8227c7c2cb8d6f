"""SPHINX: views -> frozen towers -> mixer -> image tokens spliced into the text -> LLaMA.

One module serves every variant (views per image, which towers, LLM size are config). Views are
flattened into the batch axis for the towers, so they shard like a batch. Which parts learn is
the train step's choice (`TrainConfig.trainable`: SPHINX freezes the towers, so by default they
are never differentiated).

Image tokens are spliced at the slots where `image_mask` is set, in order: the flat image-token
index of a slot is the number of image slots before it. A sample's images are its image slots
[N, V, ...]; padded images (beyond a row's image_mask.sum() / K) have no slots in the sequence.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import SphinxConfig
from sphinx_jax.models.llama import Llama
from sphinx_jax.models.mixer import Mixer
from sphinx_jax.models.vision.convnext import ConvNext
from sphinx_jax.models.vision.normalize import clip_to_imagenet
from sphinx_jax.models.vision.qformer import Blip2
from sphinx_jax.models.vision.vit import ViT


class SphinxNet(nn.Module):
  cfg: SphinxConfig

  def setup(self):
    cfg = self.cfg
    self.llm = Llama(cfg.llm)
    self.convnext = ConvNext(cfg.convnext)
    self.dinov2 = ViT(cfg.dinov2)
    if cfg.clip is not None:
      self.clip = ViT(cfg.clip)
    if cfg.blip2 is not None:
      self.qformer = Blip2(cfg.blip2)
    self.mixer = Mixer(cfg)

  def encode_images(self, images: dict) -> jax.Array:
    """{'vit': [n, V, s, s, 3], 'convnext': [n, V, t, t, 3]} -> [n, V * tokens_per_view, dim]."""
    n, views = images["vit"].shape[:2]
    vit = images["vit"].reshape(n * views, *images["vit"].shape[2:])
    vit = nn.with_logical_constraint(vit, ("batch", None, None, None))
    convnext = images["convnext"].reshape(n * views, *images["convnext"].shape[2:])
    feats = {"convnext": self.convnext(convnext), "dinov2": self.dinov2(clip_to_imagenet(vit))}
    if self.cfg.clip is not None:
      feats["clip"] = self.clip(vit)
    if self.cfg.blip2 is not None:
      feats["qformer"] = self.qformer(vit)
    tokens = self.mixer(**feats)
    return tokens.reshape(n, views * tokens.shape[1], tokens.shape[2])

  def embed(self, tokens: jax.Array, image_mask: jax.Array | None = None,
            images: dict | None = None) -> jax.Array:
    """Token embeddings with each image's tokens at its image slots: [B, T, dim]."""
    embeds = self.llm.embed(tokens)
    if images is None:
      return embeds
    batch, n_images = images["vit"].shape[:2]
    flat = jax.tree.map(lambda x: x.reshape(batch * n_images, *x.shape[2:]), images)
    image_tokens = self.encode_images(flat).astype(embeds.dtype)
    image_tokens = image_tokens.reshape(batch, -1, image_tokens.shape[-1])
    index = jnp.clip(jnp.cumsum(image_mask, axis=1) - 1, 0, image_tokens.shape[1] - 1)
    spliced = jnp.take_along_axis(image_tokens, index[..., None], axis=1)
    return jnp.where(image_mask[..., None], spliced, embeds)

  def __call__(self, tokens, image_mask=None, images=None, *, positions=None, segment_ids=None,
               cache=None, head: bool = True):
    """Logits (float32 [B, T, V]) and the updated cache; see `Llama.__call__` for the rest."""
    embeds = self.embed(tokens, image_mask, images)
    return self.llm(tokens, embeds=embeds, positions=positions, segment_ids=segment_ids,
                    cache=cache, head=head)

  def head(self, hidden):
    return self.llm.head(hidden)

  def decode(self, tokens, **kwargs):
    """Text-only continuation (decode steps after the prompt): the LLM alone."""
    return self.llm(tokens, **kwargs)


def init_params(cfg: SphinxConfig, rng: jax.Array, n_images: int = 1):
  """Boxed (logically partitioned) params for one sample with `n_images` image slots."""
  images = {k: jnp.zeros((1, n_images, cfg.n_views, s, s, 3), jnp.float32)
            for k, s in cfg.view_sizes.items()}
  tokens = jnp.zeros((1, 1), jnp.int32)
  return SphinxNet(cfg).init(rng, tokens, jnp.zeros((1, 1), bool), images)
