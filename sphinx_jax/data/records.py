"""Random access to the records of annotation files, and image decoding that names what failed.

Formats by extension: `.json` (a list of objects, parsed at open), `.jsonl` (one object a line,
indexed at open and parsed on access, so a bad line is one bad record), `.csv` (header row) and
`.parquet` (pyarrow). Every failure of one record raises BadRecord with the file and record id.

Images are decoded fully on read (corruption shows here, not later) after a size check on the
header alone: more than `pixel_limit()` pixels ($SPHINX_MAX_IMAGE_PIXELS, default 2**26 = 8192 x
8192) is refused before any pixel is decoded, so one huge image cannot exhaust memory. PIL's own
decompression-bomb check (above 2 x `Image.MAX_IMAGE_PIXELS`) still applies on top.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sphinx_jax.data.image import to_rgb
from sphinx_jax.data.skips import BadRecord
from sphinx_jax.util.errors import UserError

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
PIXEL_LIMIT_VAR = "SPHINX_MAX_IMAGE_PIXELS"
DEFAULT_PIXEL_LIMIT = 2 ** 26  # 8192 x 8192


class Records:
  """The records of one file: `len`, `[i] -> dict`, `id(i)` (e.g. "line 3") for messages."""

  def __init__(self, path: str | Path):
    self.path = Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"{self.path}: annotation file not found")
    kind = self.path.suffix.lower()
    if kind == ".jsonl":
      self._offsets = _line_offsets(self.path)
    elif kind == ".json":
      try:
        items = json.loads(self.path.read_text())
      except json.JSONDecodeError as e:
        raise UserError(f"{self.path}: not valid JSON ({e})") from None
      if not isinstance(items, list):
        raise UserError(f"{self.path}: expected a JSON list of records")
      self._items = items
    elif kind == ".csv":
      with self.path.open(newline="") as f:
        self._items = list(csv.DictReader(f))
    elif kind == ".parquet":
      import pyarrow.parquet as pq
      self._items = pq.read_table(self.path)
    else:
      raise UserError(f"{self.path}: unknown annotation format (want .json/.jsonl/.csv/.parquet)")
    self._kind = kind

  def __len__(self) -> int:
    return len(self._offsets) if self._kind == ".jsonl" else len(self._items)

  def id(self, i: int) -> str:
    return f"line {self._offsets[i][0]}" if self._kind == ".jsonl" else f"record {i}"

  def __getitem__(self, i: int) -> dict:
    if self._kind == ".jsonl":
      item = self._jsonl(i)
    elif self._kind == ".parquet":
      item = self._items.slice(i, 1).to_pylist()[0]
    else:
      item = self._items[i]
    if not isinstance(item, dict):
      raise BadRecord(self.path, self.id(i), f"expected an object, got {type(item).__name__}")
    return item

  def _jsonl(self, i: int):
    _, start, end = self._offsets[i]
    with self.path.open("rb") as f:
      f.seek(start)
      line = f.read(end - start)
    try:
      return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise BadRecord(self.path, self.id(i), f"bad JSON line ({e})") from None


def _line_offsets(path: Path) -> list[tuple[int, int, int]]:
  """(line number, start, end) of every non-blank line."""
  offsets, start = [], 0
  with path.open("rb") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        offsets.append((number, start, start + len(line)))
      start += len(line)
  return offsets


def pixel_limit() -> int:
  """The most pixels (width x height) an image may have: $SPHINX_MAX_IMAGE_PIXELS, else 2**26."""
  value = os.environ.get(PIXEL_LIMIT_VAR, "").strip()
  if not value:
    return DEFAULT_PIXEL_LIMIT
  if not value.isdigit() or int(value) <= 0:
    raise UserError(f"{PIXEL_LIMIT_VAR}={value!r}: expected a positive number of pixels")
  return int(value)


def _unreadable(name: str, e: Exception) -> UserError:
  # PIL names its input in this message, a useless BytesIO repr here: `name` says which image.
  why = "not an image format PIL knows" if isinstance(e, UnidentifiedImageError) else e
  return UserError(f"{name}: unreadable image ({why})")


def open_image(data: bytes, name: str, limit: int | None = None) -> Image.Image:
  """Encoded bytes -> a fully decoded image, refused over `limit` pixels (default
  `pixel_limit()`) from its header alone; else ValueError naming the image `name` (its path, or
  where its bytes came from)."""
  try:
    image = Image.open(io.BytesIO(data))
  except _IMAGE_ERRORS as e:
    raise _unreadable(name, e) from None
  (width, height), source = image.size, f" (${PIXEL_LIMIT_VAR})" if limit is None else ""
  limit = pixel_limit() if limit is None else limit
  if width * height > limit:
    raise UserError(f"{name}: {width}x{height} image, {width * height} pixels, over the limit "
                     f"of {limit}{source}")
  try:
    image.load()
  except _IMAGE_ERRORS as e:
    raise _unreadable(name, e) from None
  return image


def decode_image(data: bytes, file, record: str, name: str) -> Image.Image:
  """`open_image` for a record: BadRecord(file, record) naming the image `name`."""
  try:
    return open_image(data, name)
  except ValueError as e:
    raise BadRecord(file, record, str(e)) from None


def record_image(path: Path, file, record: str) -> Image.Image:
  """The image file a training record names: BadRecord(file, record) if missing or bad."""
  if not path.is_file():
    raise BadRecord(file, record, f"missing image file {path}")
  return decode_image(path.read_bytes(), file, record, str(path))


def read_image_file(path) -> Image.Image:
  """An image file for chat, eval and serving: fully decoded, RGB (`image.to_rgb`), at most
  `pixel_limit()` pixels; FileNotFoundError or ValueError, one line naming the path."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such image file")
  try:
    data = path.read_bytes()
  except OSError as e:
    raise UserError(f"{path}: unreadable image ({e.strerror or e})") from None
  return to_rgb(open_image(data, str(path)))


def base64_image(text: str, file, record: str) -> Image.Image:
  """MIMIC-IT's base64 images: standard or URL-safe alphabet (Otter decodes with urlsafe)."""
  try:
    data = base64.b64decode("".join(text.split()).translate(_URLSAFE), validate=True)
  except (binascii.Error, ValueError, TypeError, AttributeError) as e:
    raise BadRecord(file, record, f"bad base64 image ({e})") from None
  return decode_image(data, file, record, "base64 image")


_URLSAFE = str.maketrans("-_", "+/")
