"""Adapters for the multiple-choice benchmarks, each over its released files in `root`.

- ScienceQA: `problems.json` ({pid: {question, choices, answer (index), hint, image, split,
  subject}}); the image questions of `split` (ScienceQA-IMG), images/{split}/{pid}/{image}.
- SEED-Bench (v1): `SEED-Bench*.json` ({"questions": [{question_id, question, choice_a..d,
  answer, data_id, data_type, question_type_id}], "question_type": {name: id}}); image questions
  only, images in SEED-Bench-image/ (or images/).
- MMBench: one `*{split}*.tsv` (columns index, question, hint, A-D, answer, category, image as
  base64). Rows with index >= 1e6 are circular copies the file already holds (question index %
  1e6); otherwise every question is asked once per circular shift of its options.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from sphinx_jax.eval import prompts
from sphinx_jax.eval.choice import LETTERS, format_options, rotate
from sphinx_jax.eval.samples import (Inline, Question, field, find_one, image_dir, image_under,
                                     read_json)


def read_scienceqa(root: Path, split: str, **_) -> list[Question]:
  pfile = find_one(root, "problems.json")
  out = []
  for pid, p in read_json(pfile).items():
    if p.get("split") != split or not p.get("image"):
      continue
    where = f"{pfile} [{pid}]"
    options = dict(zip(LETTERS, field(p, "choices", where)))
    answer = p.get("answer")
    out.append(Question(
        str(pid),
        (image_under(root / "images" / split, os.path.join(str(pid), p["image"]), where),),
        prompts.scienceqa(field(p, "question", where), format_options(options), p.get("hint", "")),
        None if answer is None else LETTERS[answer],
        {"options": options, "subject": p.get("subject")},
        answer_prefix=prompts.SCIENCEQA_PREFIX))
  return out


def read_seed(root: Path, split: str | None = None, **_) -> list[Question]:
  qfile = find_one(root, "SEED-Bench*.json")
  data = read_json(qfile)
  names = {v: k for k, v in data.get("question_type", {}).items()}
  questions = [q for q in field(data, "questions", str(qfile))
               if q.get("data_type", "image") == "image"]
  if not questions:
    return []
  folder = image_dir(root, ["SEED-Bench-image", "images", "."], questions[0]["data_id"])
  out = []
  for q in questions:
    where = f"{qfile} [question {q.get('question_id')}]"
    options = {c.upper(): field(q, f"choice_{c}", where) for c in "abcd"}
    out.append(Question(
        str(field(q, "question_id", where)),
        (image_under(folder, field(q, "data_id", where), where),),
        prompts.multiple_choice(field(q, "question", where), format_options(options)),
        q.get("answer"),
        {"options": options,
         "question_type": names.get(q.get("question_type_id"), q.get("question_type_id"))}))
  return out


def _missing(value: str | None) -> bool:
  return value is None or value.strip().lower() in ("", "nan", "none")


def _rows(path: Path) -> list[dict]:
  limit = csv.field_size_limit()
  csv.field_size_limit(2 ** 31 - 1)  # base64 images are long fields
  try:
    with open(path, newline="") as f:
      return list(csv.DictReader(f, delimiter="\t"))
  finally:
    csv.field_size_limit(limit)


def read_mmbench(root: Path, split: str | None = None, **_) -> list[Question]:
  tsv = find_one(root, f"*{split}*.tsv" if split else "*.tsv")
  rows = _rows(tsv)
  images = {r["index"]: r["image"] for r in rows if len(r.get("image") or "") > 64}
  given = any(int(r["index"]) >= 1_000_000 for r in rows)
  out = []
  for r in rows:
    where = f"{tsv} [index {r.get('index')}]"
    index = int(field(r, "index", where))
    image = field(r, "image", where)
    image = Inline(images.get(image, image), where)  # a short field points at another row's
    texts = [r[c] for c in LETTERS if c in r and not _missing(r[c])]
    answer = None if _missing(r.get("answer")) else LETTERS.index(r["answer"].strip())
    hint = None if _missing(r.get("hint")) else r["hint"]
    shifts = [index // 1_000_000] if given else range(len(texts))
    for shift in shifts:
      options, letter = rotate(texts, answer, 0 if given else shift)
      out.append(Question(
          str(index) if given else f"{index}@{shift}", (image,),
          prompts.multiple_choice(field(r, "question", where), format_options(options), hint),
          letter, {"options": options, "group": index % 1_000_000, "shift": shift,
                   "category": r.get("category")}))
  return out
