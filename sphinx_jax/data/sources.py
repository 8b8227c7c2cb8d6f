"""Data sources: frozen specs (what a config names) whose `open()` gives random access to Examples.

An opened source is a grain data source (`len`, `[i]`); `[i]` reads one record, loads its images
and formats it, raising BadRecord (file + record id) for anything wrong with that record.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from sphinx_jax.data import example as ex
from sphinx_jax.data import tasks
from sphinx_jax.data.records import Records, load_image
from sphinx_jax.data.skips import BadRecord

_ROLES = {"human": 0, "gpt": 1, "assistant": 1}


class Opened:
  """Random access over a source's Examples: `to_example(record, file, record_id)` per record."""

  def __init__(self, name: str, size: int, get: Callable[[int], dict], record_id, to_example,
               file):
    self.name, self._size, self._get, self._id = name, size, get, record_id
    self._to_example, self.file = to_example, str(file)

  def __len__(self) -> int:
    return self._size

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


def _images(value, root: str, file, rid: str) -> list[Image.Image]:
  paths = [] if value is None else [value] if isinstance(value, str) else list(value)
  return [load_image(Path(root) / p, file, rid) for p in paths]


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

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    turns, pending = [], None
    for message in r["conversations"]:
      role = _ROLES.get(str(message["from"]).lower())
      if role is None:
        raise BadRecord(file, rid, f"unknown dialog role {message['from']!r}")
      if (role == 0) != (pending is None):
        raise BadRecord(file, rid, "turns must alternate human, assistant")
      if role == 0:
        pending = message["value"]
      else:
        turns.append((pending, message["value"]))
        pending = None
    if pending is not None:
      raise BadRecord(file, rid, "the last human turn has no answer")
    images = _images(r.get("image"), self.image_root, file, rid)
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

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    text = r[self.caption_key]
    if isinstance(text, list):
      text = random.Random(rid).choice(text) if text else ""
    (image,) = _images(r[self.image_key], self.image_root, file, rid)
    return ex.caption(str(text), image, file, rid)


@dataclasses.dataclass(frozen=True)
class TextCorpus(_FileSpec):
  """Text-only documents (JSONL/parquet/...), the text in `content` (RefinedWeb) or `text`."""

  path: str
  name: str = ""

  @staticmethod
  def _example(r: dict, file, rid: str) -> ex.Example:
    text = r["content"] if "content" in r else r["text"]
    return ex.document(str(text), file, rid)


@dataclasses.dataclass(frozen=True)
class Task(_FileSpec):
  """Task annotations formatted with SPHINX's instructions (`tasks.FORMATTERS[task]`), one image
  per record (`image_key`, relative to `image_root`)."""

  path: str
  task: str
  image_root: str = ""
  image_key: str = "image"
  name: str = ""

  def __post_init__(self):
    if self.task not in tasks.FORMATTERS:
      raise ValueError(f"unknown task {self.task!r}; known: {', '.join(tasks.FORMATTERS)}")

  def _example(self, r: dict, file, rid: str) -> ex.Example:
    (image,) = _images(r[self.image_key], self.image_root, file, rid)
    return task_example(self.task, r, image, file, rid)
