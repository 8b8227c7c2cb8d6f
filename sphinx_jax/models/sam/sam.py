"""Segment Anything: the image encoder once per image, then prompts decoded in batches.

`Sam.embed` (pixels -> image embeddings) and `Sam.segment` (embeddings + points / boxes ->
low-resolution mask logits and IoU predictions) are separate entry points (`apply(...,
method=...)`), as SAM's predictor caches an image's embedding for many prompts. Pre- and
postprocessing (resize to the longest side, pad, masks back to the image) are
`data.sam_image`.
"""
from __future__ import annotations

import flax.linen as nn

from sphinx_jax.configs import SamConfig
from sphinx_jax.models.sam.image_encoder import ImageEncoder
from sphinx_jax.models.sam.mask_decoder import MaskDecoder
from sphinx_jax.models.sam.prompt_encoder import PromptEncoder


class Sam(nn.Module):
  cfg: SamConfig

  def setup(self):
    self.image_encoder = ImageEncoder(self.cfg)
    self.prompt_encoder = PromptEncoder(self.cfg)
    self.mask_decoder = MaskDecoder(self.cfg)

  def embed(self, pixels):
    """[B, S, S, 3] normalised, padded pixels -> image embeddings [B, S/16, S/16, channels]."""
    return self.image_encoder(pixels)

  def segment(self, embeddings, points=None, labels=None, boxes=None, *, multimask: bool = True):
    """Prompts of each image (points [B, P, N, 2] with labels [B, P, N], and / or boxes [B, P,
    4], pixels of the resized frame) -> (mask logits [B, P, M, 4h, 4w], IoU [B, P, M])."""
    tokens = self.prompt_encoder(points, labels, boxes)
    grid = embeddings.shape[1]
    return self.mask_decoder(embeddings, self.prompt_encoder.dense_positions(grid),
                             self.prompt_encoder.no_mask_embedding(), tokens, multimask)

  def __call__(self, pixels, points=None, labels=None, boxes=None, *, multimask: bool = True):
    return self.segment(self.embed(pixels), points, labels, boxes, multimask=multimask)
