"""Example -> Sample: tokens with BOS/EOS, image slot blocks, the loss mask, the tower views; and
the same layout for a prompt to continue (`prompt`: evaluation and chat).

Tokens follow the reference (accessory/data/conversation/dataset.py): the text is encoded whole
(per stretch between images), then every target is located as the sublist `encode_segment(target)`
searched left to right, and exactly those tokens are supervised. Each image (each video frame) is
a block of `tokens_per_image` slots at its media's place; whitespace next to an image is not
tokenised (the reference strips it too). A sample longer than `seq_len` is cut in its text tail
(as the reference; noted CUT, so it is counted); one whose image blocks do not fit, or that keeps
nothing supervised, is a BadRecord (over-long).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from sphinx_jax.data.example import IMAGE, Example
from sphinx_jax.data.image import ViewPlan, make_views, preprocess
from sphinx_jax.models.vision.resize import DEFAULT_ARITHMETIC
from sphinx_jax.data.skips import BadRecord
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static geometry of samples: view plan, image block size K, row length T, image slots N
  (text only: no plan, K = N = 0)."""

  plan: ViewPlan | None
  tokens_per_image: int
  seq_len: int
  max_images: int


@dataclasses.dataclass(frozen=True)
class Sample:
  """One row before batching. `images`: {'vit': [n, V, s, s, 3], 'convnext': [n, V, t, t, 3]}
  (n = 0 for text only); `record` names the source record; `notes` are its Example's."""

  tokens: np.ndarray
  image_mask: np.ndarray
  loss_mask: np.ndarray
  images: dict[str, np.ndarray]
  source_id: int
  record: str
  notes: tuple[str, ...] = ()


def _find(ids: list[int], part: list[int], start: int) -> int:
  for i in range(start, len(ids) - len(part) + 1):
    if ids[i:i + len(part)] == part:
      return i
  return -1


def lay_out(text: str, frames: list[int], tok: Tokenizer,
            tokens_per_image: int) -> tuple[list[int], list[bool]]:
  """(ids with -1 at image slots, image mask): BOS, then `text` with its i-th IMAGE marker
  replaced by frames[i] blocks of slots. The text between markers is encoded per stretch, the
  first as the start of a text, the others as segments; whitespace next to a marker dropped."""
  chunks = text.split(IMAGE)
  ids, image = [tok.bos_id], [False]
  for i, chunk in enumerate(chunks):
    if i:
      n = frames[i - 1] * tokens_per_image
      ids += [-1] * n
      image += [True] * n
      chunk = chunk.lstrip()
    if i < len(chunks) - 1:
      chunk = chunk.rstrip()
    if chunk:
      piece = tok.encode_segment(chunk) if i else tok.encode(chunk, bos=False)
      ids += piece
      image += [False] * len(piece)
  return ids, image


def prompt(text: str, n_images: int, tok: Tokenizer,
           tokens_per_image: int) -> tuple[np.ndarray, np.ndarray]:
  """tokens (0 at image slots) and image_mask of a prompt to continue. One image sits right
  after BOS, the text encoded whole as the reference's inference does; several sit at their
  IMAGE markers in `text`, or, with no marker, together right after BOS as one media of frames
  (MIMIC-IT's several images or video frames, as `example.dialog` lays them out in training)."""
  markers = text.count(IMAGE)
  if n_images <= 1 and markers:
    raise UserError(f"{markers} {IMAGE} markers in a prompt with {n_images} image(s): only "
                     "several images are placed by markers")
  if n_images > 1 and markers not in (0, n_images):
    raise UserError(f"{markers} {IMAGE} markers for {n_images} images (one per image, or none: "
                     "all of them right after BOS)")
  if n_images == 1:
    return image_after_bos(tok.encode(text, bos=True), tokens_per_image)
  if n_images > 1 and not markers:
    ids, image = lay_out(IMAGE + text, [n_images], tok, tokens_per_image)
  else:
    ids, image = lay_out(text, [1] * n_images, tok, tokens_per_image)
  return np.maximum(np.asarray(ids, np.int32), 0), np.asarray(image, bool)


def image_after_bos(token_ids, tokens_per_image: int) -> tuple[np.ndarray, np.ndarray]:
  """tokens and image_mask for one image right after BOS (token_ids[0]), as the reference lays
  out a single-image prompt."""
  tokens = np.array([token_ids[0]] + [0] * tokens_per_image + list(token_ids[1:]), np.int32)
  image_mask = np.zeros(tokens.shape, bool)
  image_mask[1:1 + tokens_per_image] = True
  return tokens, image_mask


def encode(example: Example, tok: Tokenizer, tokens_per_image: int):
  """(ids with -1 at image slots, image mask, loss mask) as python lists, before any cut."""
  markers = example.prompt.count(IMAGE)
  if markers != len(example.media):
    raise BadRecord(example.file, example.record,
                    f"{markers} {IMAGE} markers for {len(example.media)} media")
  ids, image = lay_out(example.prompt, [len(m) for m in example.media], tok, tokens_per_image)
  ids.append(tok.eos_id)
  image.append(False)
  loss, start = [False] * len(ids), 0
  for target in example.targets:
    part = tok.encode_segment(target)
    at = _find(ids, part, start)
    if at < 0:
      raise BadRecord(example.file, example.record, f"target tokens not found: {target!r}")
    loss[at:at + len(part)] = [True] * len(part)
    start = at + len(part)
  loss[-1] = example.supervise_eos
  return ids, image, loss


# Compiled once per plan and shape (bit-identical to the eager ops, ~10x faster on small views);
# fed arrays committed to the host CPU, so the image work never lands on an accelerator.
_make_views = jax.jit(make_views, static_argnums=(1, 2))


def views(frames, plan: ViewPlan) -> dict[str, np.ndarray]:
  """PIL images -> {'vit', 'convnext'} view stacks [n, V, ...] (reference preprocess + tiling)."""
  return tiled(np.stack([preprocess(f, plan.image_size) for f in frames]), plan)


def tiled(pixels: np.ndarray, plan: ViewPlan,
          arithmetic: str = DEFAULT_ARITHMETIC) -> dict[str, np.ndarray]:
  """Preprocessed squares [..., S, S, 3] -> their view stacks (in the pixels' dtype, resized with
  torch's `arithmetic` kernel: models.vision.resize), computed on the host CPU."""
  pixels = jax.device_put(pixels, jax.local_devices(backend="cpu")[0])
  return {k: np.asarray(v) for k, v in _make_views(pixels, plan, arithmetic).items()}


# The note on a sample cut at seq_len (counted, named in the skip summary): its tail (answers,
# EOS) does not train, which is usually a seq_len too short for the data.
CUT = "text past seq_len (cut, its tail not trained)"


def make_sample(example: Example, tok: Tokenizer, layout: Layout, source_id: int) -> Sample:
  def bad(reason):
    return BadRecord(example.file, example.record, reason)

  if example.num_images > layout.max_images:
    raise bad(f"{example.num_images} images, more than max_images={layout.max_images}")
  ids, image, loss = encode(example, tok, layout.tokens_per_image)
  notes = example.notes
  if len(ids) > layout.seq_len:
    if any(image[layout.seq_len:]):
      raise bad(f"over-long: {len(ids)} tokens, an image block crosses seq_len={layout.seq_len}")
    ids, image, loss = (x[:layout.seq_len] for x in (ids, image, loss))
    notes = (*notes, CUT)
  if not any(loss):
    raise bad(f"over-long: nothing supervised within seq_len={layout.seq_len}")
  frames = [f for media in example.media for f in media]
  images = views(frames, layout.plan) if frames else {}
  return Sample(np.maximum(np.asarray(ids, np.int32), 0), np.asarray(image, bool),
                np.asarray(loss, bool), images, source_id, f"{example.file} [{example.record}]",
                notes)
