"""MIMIC-IT (Otter) instruction data as SPHINX dialogs.

Files: `<TASK>_instructions.json` = `{"meta": ..., "data": {INS_ID: {instruction, answer,
image_ids, rel_ins_ids}}}`; images in parquet (image id = the pandas index, a `base64` column) or
flat JSON `{IMAGE_ID: base64}`; an optional train config `{INS_ID: [context INS_IDs]}` that picks
the training instructions and orders their context (without it every instruction is trained, its
`rel_ins_ids` as context). A sample is the context turns then the query turn, in that order.

SPHINX's vocabulary is never changed, so Otter's `simple` template
`<image>User:{q} GPT:<answer>{a}<|endofchunk|>` is written in SPHINX's own conv_v1_2:
`User:` is ` Human:`, `GPT:<answer>` is ` Assistant:` and `<|endofchunk|>` is the STOP `\\n###`.
Otter's label rule (every answer after `<answer>` through `<|endofchunk|>`) is then exactly
SPHINX's (every answer with its trailing `\\n###`), in-context answers included; EOS stays
unsupervised as in SPHINX (and Otter v1). `<image>` is an image placeholder, never a token.

Kinds follow Otter's groups: `image` (IMAGE_TEXT: the query's images, e.g. a 2-image difference
pair, as one media right after BOS), `video` (VIDEO_TEXT: the same with frames resampled to
`num_frames` by `np.linspace(0, n-1, K).astype(int)`), `in_context` (IMAGE_TEXT_IN_CONTEXT: every
turn's own images at an `<image>` opening its question) and `text` (TEXT_ONLY).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from sphinx_jax.data import example as ex
from sphinx_jax.data.records import base64_image
from sphinx_jax.data.skips import BadRecord
from sphinx_jax.data.sources import Opened, text
from sphinx_jax.util.errors import UserError

KINDS = ("image", "video", "in_context", "text")


def sample_frames(n: int, k: int) -> np.ndarray:
  """Indices of k frames out of n, evenly spread (repeated when n < k), as Otter resamples."""
  return np.linspace(0, n - 1, k).astype(int)


def _read_json(path) -> dict:
  """A JSON object file; anything else is an error naming the file."""
  try:
    value = json.loads(Path(path).read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: not found") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(value, dict):
    raise UserError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def _ids(value, what: str, file, rid: str) -> list[str]:
  """A list of ids (image ids, context instruction ids); None is none."""
  if value is None:
    return []
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise BadRecord(file, rid, f"{what} is not a list of ids")
  return value


class ImageStore:
  """Image id -> base64 text, from parquet (kept as arrow columns) or a flat JSON object."""

  def __init__(self, path):
    self.path = str(path)
    if self.path.endswith(".parquet"):
      import pyarrow.parquet as pq
      table = pq.read_table(path)
      index = (table.schema.pandas_metadata or {}).get("index_columns", [])
      id_column = index[0] if index and isinstance(index[0], str) else table.column_names[0]
      self._row = {key: i for i, key in enumerate(table.column(id_column).to_pylist())}
      self._base64 = table.column("base64")
    else:
      self._row = _read_json(path)
      self._base64 = None

  def __contains__(self, image_id: str) -> bool:
    return image_id in self._row

  def __getitem__(self, image_id: str) -> str:
    row = self._row[image_id]
    return row if self._base64 is None else self._base64[row].as_py()


@dataclasses.dataclass(frozen=True)
class MimicIt:
  """One MIMIC-IT task: its instruction file, image store, optional train config, and kind."""

  instructions: str
  images: str = ""
  train_config: str = ""
  kind: str = "image"
  num_frames: int = 16
  name: str = ""

  def __post_init__(self):
    if self.kind not in KINDS:
      raise UserError(f"unknown MIMIC-IT kind {self.kind!r}; known: {', '.join(KINDS)}")
    if self.kind != "text" and not self.images:
      raise UserError(f"{self.instructions}: kind {self.kind!r} needs an image file")

  @property
  def label(self) -> str:
    return self.name or Path(self.instructions).stem.removesuffix("_instructions")

  def open(self) -> Opened:
    data = _read_json(self.instructions).get("data")
    if not isinstance(data, dict):
      raise UserError(f"{self.instructions}: expected {{'data': {{INS_ID: ...}}}}")
    if self.train_config:
      context = _read_json(self.train_config)
    else:
      context = {key: value.get("rel_ins_ids") if isinstance(value, dict) else None
                 for key, value in data.items()}
    ids = list(context)
    store = ImageStore(self.images) if self.kind != "text" else None

    def example(query: str, file, rid: str) -> ex.Example:
      turn_ids = _ids(context[query], f"the context of {query}", file, rid) + [query]
      return self._example(data, store, turn_ids, file, rid)

    return Opened(self.label, len(ids), ids.__getitem__, ids.__getitem__, example,
                  self.instructions)

  def _frames(self, store: ImageStore, image_ids, file, rid: str) -> tuple:
    for image_id in image_ids:
      if image_id not in store:
        raise BadRecord(file, rid, f"image {image_id} not in {store.path}")
    return tuple(base64_image(store[i], store.path, i) for i in image_ids)

  def _example(self, data: dict, store, turn_ids: list[str], file, rid: str) -> ex.Example:
    for turn_id in turn_ids:
      if turn_id not in data:
        raise BadRecord(file, rid, f"unknown instruction id {turn_id}")
      if not isinstance(data[turn_id], dict):
        raise BadRecord(file, rid, f"instruction {turn_id} is not an object")
    turns = [(text(data[t]["instruction"], f"{t}'s instruction", file, rid).strip(),
              text(data[t]["answer"], f"{t}'s answer", file, rid).strip().replace("\r\n", "\n"))
             for t in turn_ids]
    images = {t: _ids(data[t].get("image_ids"), f"{t}'s image_ids", file, rid) for t in turn_ids}
    query_images = images[turn_ids[-1]]
    if self.kind == "text":
      media = []
    elif self.kind == "in_context":
      media = [self._frames(store, images[t], file, rid) for t in turn_ids]
      turns = [(ex.IMAGE + q if m else q, a) for (q, a), m in zip(turns, media)]
      media = [m for m in media if m]
    else:
      if self.kind == "video":
        if not query_images:
          raise BadRecord(file, rid, "a video without frames")
        picks = sample_frames(len(query_images), self.num_frames)
        query_images = [query_images[i] for i in picks]
      media = [self._frames(store, query_images, file, rid)] if query_images else []
    return ex.dialog(turns, media, file, rid)
