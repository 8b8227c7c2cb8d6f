"""Samples -> one batch of static shapes (docs/architecture.md, "The batch contract").

Rows are right-padded to T = seq_len and images to N = max_images, so samples with different
image counts (text only, a 2-image pair, a 16-frame video, 4 in-context images) share a batch;
`valid` and `image_valid` say what is real.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sphinx_jax.data.sample import Layout, Sample


def view_shapes(layout: Layout) -> dict[str, tuple[int, ...]]:
  """Per-image view stack shapes [V, side, side, 3] of each tower under the layout's plan."""
  plan = layout.plan
  return {name: (plan.num_views, tower.input_side, tower.input_side, 3)
          for name, tower in (("vit", plan.vit), ("convnext", plan.convnext))}


def collate(samples: Sequence[Sample], layout: Layout) -> dict:
  b, t, n = len(samples), layout.seq_len, layout.max_images
  batch = {"tokens": np.zeros((b, t), np.int32), "image_mask": np.zeros((b, t), bool),
           "loss_mask": np.zeros((b, t), bool), "valid": np.zeros((b, t), bool),
           "images": {k: np.zeros((b, n) + s, np.float32) for k, s in view_shapes(layout).items()},
           "image_valid": np.zeros((b, n), bool), "source_id": np.zeros((b,), np.int32)}
  for row, s in enumerate(samples):
    length = len(s.tokens)
    batch["tokens"][row, :length] = s.tokens
    batch["image_mask"][row, :length] = s.image_mask
    batch["loss_mask"][row, :length] = s.loss_mask
    batch["valid"][row, :length] = True
    for name, stack in s.images.items():
      batch["images"][name][row, :len(stack)] = stack
      batch["image_valid"][row, :len(stack)] = True
    batch["source_id"][row] = s.source_id
  return batch
