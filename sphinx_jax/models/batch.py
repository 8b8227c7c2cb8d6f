"""The batch SphinxNet reads (docs/architecture.md, "The batch contract"), built here from rows
for every caller: training samples (data.batching), evaluation prompts and chat prompts
(inference.Sphinx). Placement on devices is `sharding.put_batch` (the rules table's 'batch').

A row: `tokens` (0 at image slots), `image_mask`, `images` {'vit': [n, V, s, s, 3],
'convnext': [n, V, t, t, 3]} for its n image blocks ({} or None for none), and for training
`loss_mask` and `source_id`. Rows are right-padded to `length` slots and `n_images` images.
A batch row may hold several rows packed back to back (`first_fit`): each is a segment of its
own (`segment_ids` 1, 2, ...; padding 0) with positions restarting at 0, its images after the
previous segments' images, so the model's splice (image slots in order) needs nothing new.
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


def first_fit(rows: Sequence[Row], *, length: int, n_images: int) -> list[list[Row]]:
  """`rows` packed into as few batch rows as first fit finds (each row into the first one with
  room for its slots and images, in order; MaxText's grain packing): lists of rows for `pack`."""
  bins: list[list[Row]] = []
  room: list[list[int]] = []  # [slots left, images left] per bin
  for row in rows:
    n, m = len(row.tokens), _n_images(row)
    for packed, left in zip(bins, room):
      if n <= left[0] and m <= left[1]:
        packed.append(row)
        left[0] -= n
        left[1] -= m
        break
    else:
      bins.append([row])
      room.append([length - n, n_images - m])
  return bins


def pack(rows: Sequence[Row | Sequence[Row]], *, length: int, n_images: int,
         view_shapes: dict[str, tuple[int, ...]], n_rows: int | None = None,
         targets: bool = False) -> dict:
  """The batch of `rows` (then empty rows up to `n_rows`): tokens, image_mask, valid,
  segment_ids, positions, images (when n_images > 0) and, with `targets`, loss_mask and
  source_id (per slot). An entry of `rows` that is a list of rows is one packed batch row.
  `view_shapes`: each tower's view stack [V, s, s, 3]."""
  b = len(rows) if n_rows is None else n_rows
  if len(rows) > b:
    raise UserError(f"{len(rows)} rows do not fit a batch of {b}")
  shape = (b, length)
  batch = {"tokens": np.zeros(shape, np.int32), "image_mask": np.zeros(shape, bool),
           "valid": np.zeros(shape, bool), "segment_ids": np.zeros(shape, np.int32),
           "positions": np.broadcast_to(np.arange(length, dtype=np.int32), shape).copy()}
  if targets:
    batch["loss_mask"] = np.zeros(shape, bool)
    batch["source_id"] = np.zeros(shape, np.int32)
  if n_images:
    batch["images"] = {k: np.zeros((b, n_images, *s), np.float32) for k, s in view_shapes.items()}
  for i, entry in enumerate(rows):
    start = image = 0
    for segment, row in enumerate(entry if isinstance(entry, (list, tuple)) else [entry], 1):
      n, end = len(row.tokens), start + len(row.tokens)
      if end > length:
        raise UserError(f"a row of {end} slots does not fit length {length}")
      at = slice(start, end)
      batch["tokens"][i, at] = row.tokens
      batch["image_mask"][i, at] = row.image_mask
      batch["valid"][i, at] = True
      batch["segment_ids"][i, at] = segment
      batch["positions"][i, at] = np.arange(n)
      if targets:
        batch["loss_mask"][i, at] = row.loss_mask
        batch["source_id"][i, at] = row.source_id
      if image + _n_images(row) > n_images:
        raise UserError(f"a row of {image + _n_images(row)} images does not fit {n_images} "
                        "image slots")
      for k, stack in (row.images or {}).items():
        batch["images"][k][i, image:image + len(stack)] = stack
      start, image = end, image + _n_images(row)
  return batch


def _n_images(row: Row) -> int:
  return len(next(iter(row.images.values()))) if row.images else 0


def padding_fraction(batch: dict) -> float:
  """The fraction of a batch's slots that hold padding."""
  return float(1 - batch["valid"].mean())


def lengths(batch: dict) -> np.ndarray:
  """Each row's prompt length (at least 1: an empty padding row decodes from slot 0)."""
  return np.maximum(batch["valid"].sum(axis=1), 1).astype(np.int32)
