"""Data sources: frozen specs (what a config names) whose `open()` gives random access to Examples.

An opened source is a grain data source (`len`, `[i]`); `[i]` reads one record, loads its images
and formats it, raising BadRecord (file + record id) for anything wrong with that record.

Image paths stay inside their source's `image_root` (the current directory when empty): a path
whose `..` climbs out, or an absolute one elsewhere, is a bad record unless the spec sets
`allow_outside_root`. The check compares normalised absolute paths and does not follow symlinks:
it stops a record from naming arbitrary files, while a data set made of symlinks still reads.
"""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from sphinx_jax.data import example as ex
from sphinx_jax.data import tasks
from sphinx_jax.data.records import Records, record_image
from sphinx_jax.data.skips import BadRecord
from sphinx_jax.util.errors import UserError

_ROLES = {"human": 0, "gpt": 1, "assistant": 1}


class Opened:
  """Random access over a source's Examples: `to_example(record, file, record_id)` per record."""

  def __init__(self, name: str, size: int, get: Callable[[int], dict], record_id, to_example,
               file):
    self.name, self._size, self._get, self._id = name, size, get, record_id
    self._to_example, self.file = to_example, str(file)

  def __len__(self) -> int:
    return self._size

  def record_id(self, i: int) -> str:
    """How messages name record i (e.g. "line 3"), whatever reading it raises."""
    return self._id(i)

  def __getitem__(self, i: int) -> ex.Example:
    rid = self._id(i)
    record = self._get(i)
    try:
      return self._to_example(record, self.file, rid)
    except BadRecord:
      raise
    except KeyError as e:
      raise BadRecord(self.file, rid, f"missing field {e}") from None
    except (TypeError, ValueError, IndexError) as e:
      raise BadRecord(self.file, rid, str(e)) from None


def open_file(name: str, path, to_example) -> Opened:
  records = Records(path)
  return Opened(name, len(records), records.__getitem__, records.id, to_example, records.path)


class _FileSpec:
  """Shared by the file-backed specs: `label` names the source (default: the file's stem)."""

  @property
  def label(self) -> str:
    return self.name or Path(self.path).stem

  def open(self) -> Opened:
    return open_file(self.label, self.path, self._example)


def image_file(root: str, path, allow_outside_root: bool, file, rid: str) -> Path:
  """`root/path` normalised (what is checked is what is read), a bad record unless `path` is a
  string and (unless allowed) stays in root."""
  if not isinstance(path, str):
    raise BadRecord(file, rid, f"image path {path!r} is not a string")
  joined, base = os.path.abspath(os.path.join(root, path)), os.path.abspath(root)
  if not allow_outside_root and os.path.commonpath([base, joined]) != base:
    raise BadRecord(file, rid, f"image path {path!r} is outside the image root {base} "
                               "(allow_outside_root=True reads it)")
  return Path(joined)


def _images(value, spec, file, rid: str) -> list[Image.Image]:
  """The images a record's image field names (none, a path, or a list of paths), under the
  spec's `image_root`."""
  if value is not None and not isinstance(value, (str, list)):
    raise BadRecord(file, rid, f"image field is {type(value).__name__}, not a path or a list")
  paths = [] if value is None else [value] if isinstance(value, str) else value
  return [record_image(image_file(spec.image_root, p, spec.allow_outside_root, file, rid), file,
                     rid) for p in paths]


def _one_image(value, spec, file, rid: str) -> Image.Image:
  images = _images(value, spec, file, rid)
  if len(images) != 1:
    raise BadRecord(file, rid, f"expected one image, got {len(images)}")
  return images[0]


def text(value, what: str, file, rid: str) -> str:
  """A record's text field, refused unless a string (str() would train on "None" or "{...}")."""
  if not isinstance(value, str):
    raise BadRecord(file, rid, f"{what} is {type(value).__name__}, not text")
  return value


def task_example(task: str, record: dict, image: Image.Image, file, rid: str) -> ex.Example:
  """A Table-1 task record as a single-image dialog."""
  turns = tasks.FORMATTERS[task](record, image.size)
  return ex.dialog(turns, [(image,)], file, rid)


@dataclasses.dataclass(frozen=True)
class Conversations(_FileSpec):
  """LLaVA / LLaMA2-Accessory dialogs: `{"image"?: path | [paths], "conversations": [{"from":
  "human" | "gpt" | "assistant", "value"}]}`, image paths relative to `image_root`.

  Several images: one per `<image>` marker, each at its marker; with at most one marker they are
  one media right after BOS (e.g. a difference pair).
  """

  path: str
  image_root: str = ""
  name: str = ""
  allow_outside_root: bool = False

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    messages = r["conversations"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
      raise BadRecord(file, rid, "'conversations' is not a list of objects")
    turns, pending = [], None
    for message in messages:
      role = _ROLES.get(str(message["from"]).lower())
      if role is None:
        raise BadRecord(file, rid, f"unknown dialog role {message['from']!r}")
      if (role == 0) != (pending is None):
        raise BadRecord(file, rid, "turns must alternate human, assistant")
      value = text(message["value"], "a turn's value", file, rid)
      if role == 0:
        pending = value
      else:
        turns.append((pending, value))
        pending = None
    if pending is not None:
      raise BadRecord(file, rid, "the last human turn has no answer")
    images = _images(r.get("image"), self, file, rid)
    markers = sum(q.count(ex.IMAGE) for q, _ in turns)
    media = [tuple(images)] if images and markers <= 1 else [(im,) for im in images]
    return ex.dialog(turns, media, file, rid)


@dataclasses.dataclass(frozen=True)
class Captions(_FileSpec):
  """Image-caption pairs (JSON/JSONL/CSV/parquet). A list of captions gives one per record, fixed
  by the record index (the reference draws one at random)."""

  path: str
  image_root: str = ""
  image_key: str = "image"
  caption_key: str = "caption"
  name: str = ""
  allow_outside_root: bool = False

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    caption = r[self.caption_key]
    if isinstance(caption, list):
      caption = random.Random(rid).choice(caption) if caption else ""
    caption = text(caption, repr(self.caption_key), file, rid)
    return ex.caption(caption, _one_image(r[self.image_key], self, file, rid), file, rid)


@dataclasses.dataclass(frozen=True)
class TextCorpus(_FileSpec):
  """Text-only documents (JSONL/parquet/...), the text in `content` (RefinedWeb) or `text`."""

  path: str
  name: str = ""

  @staticmethod
  def _example(r: dict, file, rid: str) -> ex.Example:
    key = "content" if "content" in r else "text"
    return ex.document(text(r[key], repr(key), file, rid), file, rid)


@dataclasses.dataclass(frozen=True)
class Task(_FileSpec):
  """Task annotations formatted with SPHINX's instructions (`tasks.FORMATTERS[task]`), one image
  per record (`image_key`, relative to `image_root`)."""

  path: str
  task: str
  image_root: str = ""
  image_key: str = "image"
  name: str = ""
  allow_outside_root: bool = False

  def __post_init__(self):
    if self.task not in tasks.FORMATTERS:
      raise UserError(f"unknown task {self.task!r}; known: {', '.join(tasks.FORMATTERS)}")

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    return task_example(self.task, r, _one_image(r[self.image_key], self, file, rid), file, rid)
