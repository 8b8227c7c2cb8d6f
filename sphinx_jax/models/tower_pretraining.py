"""SPHINX's towers with the heads of their own pre-training, and its loss (the embedded default's
stage 0, run by train/towers.py).

SPHINX inherits its towers pre-trained and frozen; the synthetic world has none, so this stands
in for their pre-training, one objective per family as the originals:
- clip, convnext, qformer (CLIP ViT, CLIP ConvNeXt, BLIP-2's ITC): CLIP's symmetric InfoNCE
  between the tower's pooled output and a text encoding, each tower with its own projections and
  learned temperature over one shared text trunk (a laptop-scale saving: each real model has its
  own text encoder). Identical captions in a batch are all positives of each other.
- clip, convnext also align regions with words, as GLIP: each object's phrase against the mean
  of the patch tokens its box covers, in the same embedding space (global view and a crop).
- dinov2 (self-supervised): InfoNCE between two augmented views of one image (a shifted global
  view against a shifted sub-image crop or another global view): the contrastive form of DINO's
  local-to-global invariance, through a 2-layer projection head.
Pooling is the mean over every output token (class token and patches, map cells, queries), so
the patch tokens the LLM will read are what is trained, not only a class token.

The tower submodules have the names and shapes of models.sphinx.SphinxNet's, so the trained towers
drop into a SPHINX params tree as they are (`TOWERS`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sphinx_jax.configs import SphinxConfig, TextConfig
from sphinx_jax.models.text_encoder import TextEncoder
from sphinx_jax.models.vision.convnext import ConvNext
from sphinx_jax.models.vision.normalize import clip_to_imagenet
from sphinx_jax.models.vision.qformer import Blip2
from sphinx_jax.models.layers import dense
from sphinx_jax.models.vision.vit import ViT

TOWERS = ("clip", "convnext", "dinov2", "qformer")
DINO_TEMPERATURE = 0.1


def text_aligned(cfg: SphinxConfig) -> tuple[str, ...]:
  """The towers trained against text (the light variants have no CLIP ViT and no BLIP-2)."""
  return tuple(n for n, present in (("clip", cfg.clip), ("convnext", True),
                                    ("qformer", cfg.blip2)) if present is not None)


class TowerPretraining(nn.Module):
  """Towers + text encoder + projection heads. Params: clip, convnext, dinov2, qformer (as in
  Sphinx), text_encoder, {tower}_image_head, {tower}_text_head, dino_head, logit_scale."""

  cfg: SphinxConfig
  text: TextConfig
  embed_dim: int = 64

  def setup(self):
    cfg = self.cfg
    self.convnext = ConvNext(cfg.convnext)
    self.dinov2 = ViT(cfg.dinov2)
    if cfg.clip is not None:
      self.clip = ViT(cfg.clip)
    if cfg.blip2 is not None:
      self.qformer = Blip2(cfg.blip2)
    self.text_encoder = TextEncoder(self.text)
    names = text_aligned(cfg)
    head = lambda name: dense(self.text, self.embed_dim, (None, None), name)  # noqa: E731
    self.image_heads = {n: head(f"{n}_image_head") for n in names}
    self.text_heads = {n: head(f"{n}_text_head") for n in names}
    self.dino_hidden = dense(self.text, 2 * self.embed_dim, (None, None), "dino_head_hidden")
    self.dino_out = dense(self.text, self.embed_dim, (None, None), "dino_head")
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)),
                                  (len(names),))

  def features(self, vit: jax.Array, convnext: jax.Array, qformer: bool = True) -> dict:
    """Raw outputs of the text-aligned towers on views [N, s, s, 3]: clip [N, 1 + g^2, C],
    convnext [N, g, g, C], qformer [N, queries, C] (unless `qformer` is False)."""
    out = {"convnext": self.convnext(convnext)}
    if self.cfg.clip is not None:
      out["clip"] = self.clip(vit)
    if self.cfg.blip2 is not None and qformer:
      out["qformer"] = self.qformer(vit)
    return out

  def _global(self, feats: dict) -> dict[str, jax.Array]:
    pooled = {n: x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1) for n, x in feats.items()}
    return {n: _unit(self.image_heads[n](x)) for n, x in pooled.items()}

  def _regions(self, feats: dict, boxes: jax.Array) -> dict[str, jax.Array]:
    """[N, R, E] per gridded tower: the tokens each box covers, averaged by overlap."""
    out = {}
    for name in ("clip", "convnext"):
      if name not in feats:
        continue
      x = feats[name]
      grid = x[:, 1:] if name == "clip" else x.reshape(x.shape[0], -1, x.shape[-1])
      weights = cell_weights(boxes, int(round(grid.shape[1] ** 0.5)))
      pooled = jnp.einsum("nrk,nkc->nrc", weights.reshape(*weights.shape[:2], -1), grid)
      out[name] = _unit(self.image_heads[name](pooled))
    return out

  def image_embeddings(self, vit, convnext) -> dict[str, jax.Array]:
    """Unit-norm image embeddings [N, E] of each text-aligned tower (the mean output token)."""
    return self._global(self.features(vit, convnext))

  def region_embeddings(self, vit, convnext, boxes) -> dict[str, jax.Array]:
    """Unit-norm embeddings [N, R, E] of the regions `boxes` [N, R, 4] (fractions of each view),
    for the towers with a patch grid (CLIP ViT, ConvNeXt), in their image embedding space."""
    return self._regions(self.features(vit, convnext, qformer=False), boxes)

  def text_embeddings(self, tokens, valid) -> dict[str, jax.Array]:
    """Unit-norm text embeddings [N, E], one per text-aligned tower's projection."""
    trunk = self.text_encoder(tokens, valid)
    return {n: _unit(head(trunk)) for n, head in self.text_heads.items()}

  def dino_embeddings(self, views: jax.Array) -> jax.Array:
    """Unit-norm DINOv2 embeddings [..., E] of views [..., s, s, 3] (CLIP-normalised pixels,
    re-normalised to ImageNet statistics as SPHINX feeds DINOv2)."""
    lead = views.shape[:-3]
    x = self.dinov2(clip_to_imagenet(views.reshape(-1, *views.shape[-3:]))).mean(axis=1)
    return _unit(self.dino_out(nn.gelu(self.dino_hidden(x)))).reshape(*lead, -1)

  def __call__(self, batch: dict) -> dict:
    """Embeddings of a data.pairs batch: global views, captions then hard negatives
    ([B + B*K, E]), the regions of both views [B, 2, R, E] and their phrases [B, R, E]."""
    b, k, length = batch["negatives"].shape
    views = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  [B, 2, ...] -> [2B, ...]
    feats = self.features(views(batch["vit"]), views(batch["convnext"]), qformer=False)
    first = {n: x.reshape(b, 2, *x.shape[1:])[:, 0] for n, x in feats.items()}
    if self.cfg.blip2 is not None:
      first["qformer"] = self.qformer(batch["vit"][:, 0])
    regions = self._regions(feats, views(batch["boxes"]))
    r, p = batch["phrases"].shape[1:]
    texts = jnp.concatenate([batch["text"], batch["negatives"].reshape(b * k, length)])
    valid = jnp.concatenate([batch["text_valid"],
                             batch["negatives_valid"].reshape(b * k, length)])
    return {"image": self._global(first), "text": self.text_embeddings(texts, valid),
            "regions": {n: x.reshape(b, 2, r, -1) for n, x in regions.items()},
            "phrases": self.text_embeddings(batch["phrases"].reshape(b * r, p),
                                            batch["phrases_valid"].reshape(b * r, p)),
            "dino": self.dino_embeddings(batch["dino"]), "logit_scale": self.logit_scale}


def cell_weights(boxes: jax.Array, grid: int) -> jax.Array:
  """[..., 4] boxes (fractions) -> [..., grid, grid]: each cell's share of the box's area."""
  edges = jnp.arange(grid + 1) / grid
  def overlap(lo, hi):
    return jnp.clip(jnp.minimum(hi[..., None], edges[1:]) - jnp.maximum(lo[..., None],
                                                                        edges[:-1]), 0.0)
  cells = overlap(boxes[..., 1], boxes[..., 3])[..., :, None] * overlap(
      boxes[..., 0], boxes[..., 2])[..., None, :]
  return cells / jnp.maximum(cells.sum(axis=(-2, -1), keepdims=True), 1e-9)


def _unit(x: jax.Array) -> jax.Array:
  """x / |x|, with a finite gradient at 0 (padded regions pool nothing)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def contrastive_loss(a: jax.Array, b: jax.Array, scale: jax.Array,
                     same: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE of unit embeddings a [B, E] and b [B + N, E]: row i of a matches row i of
  b, the N extra rows of b are negatives for every a (hard negatives, a -> b only); `same`
  [B, B] marks further positives (identical captions), the targets spreading over them.
  Returns (loss, top-1 accuracy of a -> b)."""
  n = a.shape[0]
  logits = scale * a @ b.T
  targets = jnp.eye(n) if same is None else same.astype(jnp.float32)
  targets = targets / targets.sum(axis=1, keepdims=True)
  wide = jnp.pad(targets, ((0, 0), (0, b.shape[0] - n)))
  loss = (optax.softmax_cross_entropy(logits, wide).mean()
          + optax.softmax_cross_entropy(logits[:, :n].T, targets.T).mean()) / 2
  hit = jnp.take_along_axis(wide, logits.argmax(axis=1)[:, None], axis=1)[:, 0] > 0
  return loss, hit.mean()


def _identical(tokens: jax.Array, valid: jax.Array) -> jax.Array:
  """[N, N]: rows holding the same text."""
  tokens = jnp.where(valid, tokens, -1)
  return (tokens[:, None, :] == tokens[None, :, :]).all(axis=-1)


def region_loss(regions: jax.Array, region_valid: jax.Array, phrases: jax.Array,
                phrase_valid: jax.Array, same: jax.Array, scale: jax.Array):
  """Each valid region [M, E] against every valid phrase of the batch [P, E]; `same` [M, P]
  marks its phrase and the identical ones (its positives). (loss, top-1 accuracy)."""
  logits = jnp.where(phrase_valid[None, :], scale * regions @ phrases.T, -1e9)
  targets = (same & phrase_valid[None, :]).astype(jnp.float32)
  targets = targets / jnp.maximum(targets.sum(axis=1, keepdims=True), 1)
  weight = region_valid.astype(jnp.float32)
  loss = (optax.softmax_cross_entropy(logits, targets) * weight).sum() / jnp.maximum(
      weight.sum(), 1)
  hit = jnp.take_along_axis(targets, logits.argmax(axis=1)[:, None], axis=1)[:, 0] > 0
  return loss, (hit * weight).sum() / jnp.maximum(weight.sum(), 1)


def pretraining_loss(out: dict, batch: dict) -> tuple[jax.Array, dict]:
  """The sum of every tower's contrastive losses (image-caption, region-phrase for the gridded
  towers, DINOv2's view pair), and per-tower losses and in-batch accuracies."""
  same = _identical(batch["text"], batch["text_valid"])
  b, r, p = batch["phrases"].shape
  phrase_same = _identical(batch["phrases"].reshape(b * r, p),
                           batch["phrases_valid"].reshape(b * r, p))
  region_same = jnp.tile(phrase_same.reshape(b, 1, r, b * r), (1, 2, 1, 1)).reshape(-1, b * r)
  phrase_valid = batch["region_valid"][:, 0].reshape(b * r)
  metrics, total = {}, 0.0
  scales = jnp.exp(jnp.clip(out["logit_scale"], 0.0, np.log(100.0)))  # CLIP's clamp at 100
  for i, name in enumerate(out["image"]):
    loss, acc = contrastive_loss(out["image"][name], out["text"][name], scales[i], same)
    metrics[f"loss_{name}"], metrics[f"acc_{name}"] = loss, acc
    total += loss
    if name in out["regions"]:
      loss, acc = region_loss(out["regions"][name].reshape(b * 2 * r, -1),
                              batch["region_valid"].reshape(-1), out["phrases"][name],
                              phrase_valid, region_same, scales[i])
      metrics[f"loss_{name}_regions"], metrics[f"acc_{name}_regions"] = loss, acc
      total += loss
  loss, acc = contrastive_loss(out["dino"][:, 0], out["dino"][:, 1], 1 / DINO_TEMPERATURE)
  metrics["loss_dinov2"], metrics["acc_dinov2"] = loss, acc
  total += loss
  return total, {"loss": total, **metrics}
