"""What a benchmark adapter yields, and the file helpers the adapters share.

An adapter turns a benchmark's own files into `Question`s: an id, the images (paths, or data
inlined in the annotation file), the question as the model sees it, the reference the metric
needs, and metadata written next to each prediction (so scores are recomputed from the
predictions file alone). Errors name the file and record.

Images load as training data does (data.records: the pixel limit, 16-bit scaling, errors that
name the image), and an annotation's image path must stay inside the benchmark's folder
(`image_under`: normalised paths, symlinks not followed, as data.sources).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from PIL import Image

from sphinx_jax.data import records
from sphinx_jax.data.image import to_rgb
from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Inline:
  """An image stored inside an annotation file (MMBench's base64 column); `source` names it."""

  data: str
  source: str


@dataclasses.dataclass(frozen=True)
class Question:
  """One prompt. `question` is the last human turn; `history` holds earlier (question, answer)
  turns (in-context demonstrations); with several images each question carries an IMAGE marker
  where its image goes. `answer_prefix` starts the assistant's answer (ScienceQA's)."""

  id: str
  images: tuple[Path | Inline, ...]
  question: str
  reference: Any = None
  meta: dict = dataclasses.field(default_factory=dict)
  history: tuple[tuple[str, str], ...] = ()
  answer_prefix: str = ""


def benchmark_image(ref: Path | Inline) -> Image.Image:
  """RGB image of a path or inline data; a missing, unreadable or too large one is a one-line
  error naming it (records.read_image_file)."""
  if not isinstance(ref, Inline):
    return records.read_image_file(ref)
  try:
    data = base64.b64decode(ref.data)
  except binascii.Error as e:
    raise UserError(f"{ref.source}: bad base64 image ({e})") from None
  return to_rgb(records.open_image(data, ref.source))


def image_under(folder: Path, name: str, where: str) -> Path:
  """`folder/name`, refused (ValueError naming `where`) when `name` leaves `folder`."""
  base = os.path.abspath(folder)
  if os.path.commonpath([base, os.path.abspath(os.path.join(folder, name))]) != base:
    raise UserError(f"{where}: image path {name!r} is outside the image root {base}")
  return Path(folder) / name


def read_json(path: Path) -> Any:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such file") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path) -> list[dict]:
  out = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise UserError(f"{path}:{number}: not valid JSON ({e})") from None
  return out


def find_one(root: Path, pattern: str, required: bool = True) -> Path | None:
  """The single file matching `pattern` in `root` or one folder below (VizWiz's Annotations/)."""
  found = sorted({*root.glob(pattern), *root.glob(f"*/{pattern}")})
  if len(found) > 1:
    raise UserError(f"{root}: several files match {pattern!r}: {[str(f) for f in found]}; "
                     f"pass --split to choose, or keep one")
  if not found and required:
    raise FileNotFoundError(f"{root}: no file matches {pattern!r}")
  return found[0] if found else None


def image_dir(root: Path, subdirs: list[str], probe: str) -> Path:
  """The first of `root/<subdir>` that holds the image `probe` (a benchmark's first image)."""
  for sub in subdirs:
    if (root / sub / probe).is_file():
      return root / sub
  tried = ", ".join(str(root / s / probe) for s in subdirs)
  raise FileNotFoundError(f"image {probe} not found; tried {tried}")


def field(record: dict, key: str, where: str) -> Any:
  if key not in record:
    raise UserError(f"{where}: no {key!r} field")
  return record[key]
