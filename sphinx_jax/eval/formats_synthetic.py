"""Adapters for the held-out split of the synthetic world (`data.synthetic.write_world`), which
the embedded default scores itself on: `root` is the world, `split` its folder (`eval`).

- synthetic_vqa: `vqa.jsonl` ({image, question, answer, type}); scored per type (colour, shape,
  count, yesno) by exact match.
- synthetic_ocr: `ocr.jsonl`, the same format; exact match.
- synthetic_rec: `rec.jsonl` ({image, phrase, box}); Acc@0.5 as RefCOCO.

Prompts are the training instructions (data.tasks), which are Accessory's evaluation prompts.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from sphinx_jax.eval import prompts
from sphinx_jax.eval.samples import Sample, field, read_jsonl


def _records(root: Path, split: str, name: str):
  path = root / split / f"{name}.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file (write the world with data.synthetic)")
  for i, r in enumerate(read_jsonl(path)):
    yield f"{i}", path.parent / field(r, "image", f"{path}:{i + 1}"), r, f"{path}:{i + 1}"


def read_vqa(root: Path, split: str, name: str = "vqa", **_) -> list[Sample]:
  return [Sample(sid, (image,), prompts.short_answer(field(r, "question", where)),
                 field(r, "answer", where), {"answer_type": r.get("type")})
          for sid, image, r, where in _records(root, split, name)]


def read_rec(root: Path, split: str, **_) -> list[Sample]:
  out = []
  for sid, image, r, where in _records(root, split, "rec"):
    with Image.open(image) as im:  # the header only
      w, h = im.size
    out.append(Sample(sid, (image,), prompts.REC.format(field(r, "phrase", where)),
                      field(r, "box", where), {"width": w, "height": h}))
  return out
