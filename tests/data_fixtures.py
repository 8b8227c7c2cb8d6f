"""Data test fixtures written into a tmp dir: a LLaMA-like tokenizer, solid-colour images, and
annotation files of every source kind (conversations, tasks, corpus, MIMIC-IT)."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.tokenizer_refs import train_tokenizer

# LLaMA's sentencepiece settings: bytes for unknown characters, text kept verbatim.
LLAMA_LIKE = dict(vocab_size=400, byte_fallback=True, normalization_rule_name="identity",
                  remove_extra_whitespaces=False, split_digits=True)
K = 3  # tokens per image in the tests


def tokenizer(tmp: Path) -> Path:
  tmp.mkdir(parents=True, exist_ok=True)
  return train_tokenizer(tmp, **LLAMA_LIKE)


def png(color, size=(8, 6)) -> bytes:
  out = io.BytesIO()
  Image.new("RGB", size, tuple(color)).save(out, format="PNG")
  return out.getvalue()


def write_jsonl(path: Path, records, tail: str = "") -> Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
  return path


def gray(i: int) -> tuple[int, int, int]:
  """A distinct colour per image index, so tests can tell images apart after preprocessing."""
  return (10 * i, 255 - 10 * i, 7 * i)


def image_colour(views: np.ndarray) -> tuple[int, int, int]:
  """The solid colour back from a preprocessed view stack [V, s, s, 3] (CLIP-normalised)."""
  from sphinx_jax.models.vision.normalize import CLIP_MEAN, CLIP_STD
  pixel = views[0, views.shape[1] // 2, views.shape[2] // 2]
  return tuple(int(round(v)) for v in (pixel * np.asarray(CLIP_STD) + CLIP_MEAN) * 255)


def mimic_it(tmp: Path, task: str, turns, images: dict[str, bytes], train_config=None,
             parquet: bool = True) -> dict:
  """MIMIC-IT files: turns = [(ins_id, instruction, answer, image_ids, rel_ins_ids)]; returns the
  paths as MimicIt keyword arguments. Images go to parquet (pandas index layout) or flat JSON."""
  data = {i: {"instruction": q, "answer": a, "image_ids": ims, "rel_ins_ids": rel}
          for i, q, a, ims, rel in turns}
  paths = {"instructions": tmp / f"{task}_instructions.json"}
  paths["instructions"].write_text(json.dumps({"meta": {"version": "0"}, "data": data}))
  encoded = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
             for k, v in images.items()}
  if parquet:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"base64": list(encoded.values()), "__index_level_0__": list(encoded)})
    meta = {b"pandas": json.dumps({"index_columns": ["__index_level_0__"]}).encode()}
    paths["images"] = tmp / f"{task}.parquet"
    pq.write_table(table.replace_schema_metadata(meta), paths["images"])
  else:
    paths["images"] = tmp / f"{task}.json"
    paths["images"].write_text(json.dumps(encoded))
  if train_config is not None:
    paths["train_config"] = tmp / f"{task}_train.json"
    paths["train_config"].write_text(json.dumps(train_config))
  return {k: str(v) for k, v in paths.items()}
