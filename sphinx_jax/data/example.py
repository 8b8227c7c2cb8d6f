"""A record as text before tokens: the prompt with image markers, the supervised pieces, the media.

Image layout (the model's batch contract): a sample whose images all belong to one marker (one
image, a 2-image difference pair, a video's frames) has them right after BOS, as the reference
places its single image (its prompt starts with the marker, and `<image>` is removed from the
turns, as `value.replace("<image>", "").strip()` does there); a sample with several markers
(in-context examples, interleaved images) keeps each media at its marker.

A dialog with markers but no image still trains (its markers removed, as the reference does), but
says so in its `notes`, which the consumer's SkipLog counts: such records are usually a data bug.
"""
from __future__ import annotations

import dataclasses
import re

from PIL import Image

from sphinx_jax.data import templates
from sphinx_jax.data.skips import BadRecord

IMAGE = "<image>"
MARKER_WITHOUT_IMAGE = f"{IMAGE} markers without an image"
_AROUND_IMAGE = re.compile(r"\s*" + re.escape(IMAGE) + r"\s*")


@dataclasses.dataclass(frozen=True)
class Example:
  """`prompt` holds one IMAGE marker per entry of `media` (a media: one image, or several frames,
  each frame getting its own token block); `targets` are the supervised pieces of the prompt, in
  order (the reference locates their tokens by sublist search); `file`/`record` name the source;
  `notes` are warnings about a record that still trains (e.g. MARKER_WITHOUT_IMAGE)."""

  prompt: str
  targets: tuple[str, ...]
  media: tuple[tuple[Image.Image, ...], ...] = ()
  supervise_eos: bool = False
  file: str = ""
  record: str = ""
  notes: tuple[str, ...] = ()

  @property
  def num_images(self) -> int:
    return sum(len(m) for m in self.media)


def dialog(turns: list[tuple[str, str]], media: list[tuple[Image.Image, ...]], file,
           record: str) -> Example:
  """A conv_v1_2 training dialog: every answer and its STOP supervised, EOS not (the reference)."""
  if not turns:
    raise BadRecord(file, record, "empty conversation")
  if any(not isinstance(part, str) for turn in turns for part in turn):
    raise BadRecord(file, record, "a turn is not text")
  dropped = not media and any(IMAGE in q + a for q, a in turns)
  if len(media) <= 1:
    turns = [(q.replace(IMAGE, "").strip(), a.replace(IMAGE, "").strip()) for q, a in turns]
  else:
    turns = [(_AROUND_IMAGE.sub(IMAGE, q).strip(), a.strip()) for q, a in turns]
    markers = sum(q.count(IMAGE) + a.count(IMAGE) for q, a in turns)
    if markers != len(media):
      raise BadRecord(file, record, f"{markers} {IMAGE} markers for {len(media)} images")
  if any(not a for _, a in turns):
    raise BadRecord(file, record, "empty answer")
  prompt, targets = templates.conversation(turns)
  if len(media) == 1:
    prompt = IMAGE + prompt
  return Example(prompt, tuple(targets), tuple(media), False, str(file), record,
                 (MARKER_WITHOUT_IMAGE,) if dropped else ())


def caption(text: str, image: Image.Image, file, record: str) -> Example:
  """Stage-1 image-caption pair: BOS, image, caption, EOS; caption and EOS supervised (reference
  FinetuneDataset with the empty "caption" prompt)."""
  text = text.strip()
  if not text:
    raise BadRecord(file, record, "empty caption")
  return Example(IMAGE + text, (text,), ((image,),), True, str(file), record)


def document(text: str, file, record: str) -> Example:
  """A text-only document: BOS, text, EOS, all supervised (reference falcon.py)."""
  text = text.strip()
  if not text:
    raise BadRecord(file, record, "empty text")
  return Example(text, (text,), (), True, str(file), record)
