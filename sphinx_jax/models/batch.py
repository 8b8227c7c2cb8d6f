"""The batch SphinxNet reads (docs/architecture.md, "The batch contract"), built here from rows
for every caller: training samples (data.batching), evaluation prompts and chat prompts
(inference.Sphinx). Placement on devices is `sharding.put_batch` (the rules table's 'batch').

A row: `tokens` (0 at image slots), `image_mask`, `images` {'vit': [n, V, s, s, 3],
'convnext': [n, V, t, t, 3]} for its n image blocks ({} or None for none), and for training
`loss_mask` and `source_id`. Rows are right-padded to `length` slots and `n_images` images.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from sphinx_jax.util.errors import UserError

LENGTH_BUCKET = 128  # prompt batches are padded to a multiple of this: few compiled shapes


class Row(Protocol):
  tokens: np.ndarray
  image_mask: np.ndarray
  images: dict[str, np.ndarray] | None


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A row to continue (no targets): a prompt's tokens, image slots and images."""

  tokens: np.ndarray
  image_mask: np.ndarray
  images: dict[str, np.ndarray] | None = None


def power_of_two(n: int) -> int:
  """The smallest power of two >= n: batch rows and decode loop lengths, few compiled shapes."""
  return 1 << (n - 1).bit_length()


def bucketed(length: int) -> int:
  """The padded length of a prompt batch whose longest row has `length` slots."""
  return -(-length // LENGTH_BUCKET) * LENGTH_BUCKET


def pack(rows: Sequence[Row], *, length: int, n_images: int,
         view_shapes: dict[str, tuple[int, ...]], n_rows: int | None = None,
         targets: bool = False) -> dict:
  """The batch of `rows` (then empty rows up to `n_rows`): tokens, image_mask, valid, images
  (when n_images > 0) and, with `targets`, the rows' loss_mask and source_id. `view_shapes`:
  each tower's view stack [V, s, s, 3]."""
  b = len(rows) if n_rows is None else n_rows
  if len(rows) > b:
    raise UserError(f"{len(rows)} rows do not fit a batch of {b}")
  batch = {"tokens": np.zeros((b, length), np.int32), "image_mask": np.zeros((b, length), bool),
           "valid": np.zeros((b, length), bool)}
  if targets:
    batch["loss_mask"] = np.zeros((b, length), bool)
    batch["source_id"] = np.zeros((b,), np.int32)
  if n_images:
    batch["images"] = {k: np.zeros((b, n_images, *s), np.float32) for k, s in view_shapes.items()}
  for i, row in enumerate(rows):
    n = len(row.tokens)
    if n > length:
      raise UserError(f"a row of {n} slots does not fit length {length}")
    batch["tokens"][i, :n] = row.tokens
    batch["image_mask"][i, :n] = row.image_mask
    batch["valid"][i, :n] = True
    if targets:
      batch["loss_mask"][i, :n] = row.loss_mask
      batch["source_id"][i] = row.source_id
    for k, stack in (row.images or {}).items():
      if len(stack) > n_images:
        raise UserError(f"a row of {len(stack)} images does not fit {n_images} image slots")
      batch["images"][k][i, :len(stack)] = stack
  return batch


def lengths(batch: dict) -> np.ndarray:
  """Each row's prompt length (at least 1: an empty padding row decodes from slot 0)."""
  return np.maximum(batch["valid"].sum(axis=1), 1).astype(np.int32)
