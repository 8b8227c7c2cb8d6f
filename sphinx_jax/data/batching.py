"""Samples -> one training batch of static shapes (models.batch.pack; docs/architecture.md, "The
batch contract").

Rows are right-padded to T = seq_len and images to N = max_images, so samples with different
image counts (text only, a 2-image pair, a 16-frame video, 4 in-context images) share a batch;
`valid` says which slots are real; a row's images are its first image_mask.sum() / K.
"""
from __future__ import annotations

from collections.abc import Sequence

from sphinx_jax.data.sample import Layout, Sample
from sphinx_jax.models.batch import pack


def view_shapes(layout: Layout) -> dict[str, tuple[int, ...]]:
  """Per-image view stack shapes [V, side, side, 3] of each tower under the layout's plan ({}
  for text only)."""
  plan = layout.plan
  if plan is None:
    return {}
  return {name: (plan.num_views, tower.input_side, tower.input_side, 3)
          for name, tower in (("vit", plan.vit), ("convnext", plan.convnext))}


def collate(samples: Sequence[Sample], layout: Layout) -> dict:
  return pack(samples, length=layout.seq_len, n_images=layout.max_images,
              view_shapes=view_shapes(layout), targets=True)
