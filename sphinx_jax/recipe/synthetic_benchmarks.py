"""The recipe's benchmarks (`register()` adds them to eval.benchmarks): adapters for the held-out
split of the synthetic world (`data.synthetic.write_world`), which
the embedded default scores itself on: `root` is the world, `split` its folder (`eval`).

- synthetic_vqa: `vqa.jsonl` ({image, question, answer, type}); scored per type (colour, shape,
  count, yesno) by exact match.
- synthetic_ocr: `ocr.jsonl`, the same format; exact match.
- synthetic_rec: `rec.jsonl` ({image, phrase, box}); Acc@0.5 as RefCOCO.
- synthetic_detection: `detection.jsonl` ({image, objects: [{label, box}]}); F1 at IoU 0.5.
- synthetic_vqa_swapped: synthetic_vqa's questions about another scene's image (each record
  gets the image of the next record with a different image): how much answers depend on it.

Prompts are the training instructions (data.tasks), which are Accessory's evaluation prompts.
"""
from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

from sphinx_jax.data import tasks
from sphinx_jax.eval import detection, prompts, rec
from sphinx_jax.eval import benchmarks
from sphinx_jax.eval.benchmarks import EXACT_MATCH, Benchmark
from sphinx_jax.eval.samples import Question, field, image_under, read_jsonl


def _records(root: Path, split: str, name: str):
  path = root / split / f"{name}.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file (write the world with data.synthetic)")
  for i, r in enumerate(read_jsonl(path)):
    where = f"{path}:{i + 1}"
    yield f"{i}", image_under(path.parent, field(r, "image", where), where), r, where


def read_vqa(root: Path, split: str, name: str = "vqa", swap: bool = False,
             **_) -> list[Question]:
  records = list(_records(root, split, name))
  images = [image for _, image, _, _ in records]
  if swap:
    images = [next((other for other in images[i + 1:] + images[:i] if other != image), image)
              for i, image in enumerate(images)]
  return [Question(sid, (image,), prompts.short_answer(field(r, "question", where)),
                   field(r, "answer", where), {"answer_type": r.get("type")})
          for (sid, _, r, where), image in zip(records, images)]


def _size(image: Path) -> dict:
  with Image.open(image) as im:  # the header only
    return {"width": im.size[0], "height": im.size[1]}


def read_rec(root: Path, split: str, **_) -> list[Question]:
  return [Question(sid, (image,), prompts.REC.format(field(r, "phrase", where)),
                   field(r, "box", where), _size(image))
          for sid, image, r, where in _records(root, split, "rec")]


def read_detection(root: Path, split: str, **_) -> list[Question]:
  return [Question(sid, (image,), tasks.DETECTION, field(r, "objects", where), _size(image))
          for sid, image, r, where in _records(root, split, "detection")]


BENCHMARKS = {
    "synthetic_vqa": Benchmark(read_vqa, EXACT_MATCH, 10, "eval"),
    "synthetic_ocr": Benchmark(functools.partial(read_vqa, name="ocr"), EXACT_MATCH, 10, "eval"),
    "synthetic_rec": Benchmark(read_rec, rec.accuracy, 30, "eval"),
    "synthetic_detection": Benchmark(read_detection, detection.f1, 128, "eval"),
    "synthetic_vqa_swapped": Benchmark(functools.partial(read_vqa, swap=True), EXACT_MATCH, 10,
                                       "eval"),
}


def register() -> None:
  """Make the synthetic_* names known to `eval.runner.evaluate` and `launch eval`."""
  for name, benchmark in BENCHMARKS.items():
    benchmarks.register(name, benchmark)
