"""Random access to the records of annotation files, and image decoding that names what failed.

Formats by extension: `.json` (a list of objects, parsed at open), `.jsonl` (one object a line,
indexed at open and parsed on access, so a bad line is one bad record), `.csv` (header row) and
`.parquet` (pyarrow). Every failure of one record raises BadRecord with the file and record id.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from pathlib import Path

from PIL import Image

from sphinx_jax.data.skips import BadRecord

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


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
        raise ValueError(f"{self.path}: not valid JSON ({e})") from None
      if not isinstance(items, list):
        raise ValueError(f"{self.path}: expected a JSON list of records")
      self._items = items
    elif kind == ".csv":
      with self.path.open(newline="") as f:
        self._items = list(csv.DictReader(f))
    elif kind == ".parquet":
      import pyarrow.parquet as pq
      self._items = pq.read_table(self.path)
    else:
      raise ValueError(f"{self.path}: unknown annotation format (want .json/.jsonl/.csv/.parquet)")
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


def decode_image(data: bytes, file, record: str) -> Image.Image:
  """Encoded image bytes -> a fully decoded PIL image (so corruption shows here, not later)."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
  except _IMAGE_ERRORS as e:
    raise BadRecord(file, record, f"unreadable image ({e})") from None


def load_image(path: Path, file, record: str) -> Image.Image:
  if not path.is_file():
    raise BadRecord(file, record, f"missing image file {path}")
  return decode_image(path.read_bytes(), file, record)


def base64_image(text: str, file, record: str) -> Image.Image:
  """MIMIC-IT's base64 images: standard or URL-safe alphabet (Otter decodes with urlsafe)."""
  try:
    data = base64.b64decode("".join(text.split()).translate(_URLSAFE), validate=True)
  except (binascii.Error, ValueError, TypeError, AttributeError) as e:
    raise BadRecord(file, record, f"bad base64 image ({e})") from None
  return decode_image(data, file, record)


_URLSAFE = str.maketrans("-_", "+/")
