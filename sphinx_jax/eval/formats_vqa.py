"""Adapters for the short-answer VQA benchmarks, each over its released files in `root`.

- VQAv2 / OK-VQA: `*{split}*questions*.json` ({"questions": [{question_id, image_id, question}],
  "data_subtype"}) and, unless a test split, `*{split}*annotations*.json` ({"annotations":
  [{question_id, answers: [{answer}] x10, answer_type}]}); images
  `{data_subtype}/COCO_{data_subtype}_{image_id:012d}.jpg` (or under images/ or root).
- GQA: `{split}_questions.json` ({qid: {imageId, question, answer, types}}); images/{imageId}.jpg.
- VizWiz: `{split}.json` ([{image, question, answers: [{answer}] x10, answer_type}]); images in
  {split}/ or images/.
- TextVQA: `TextVQA_0.5.1_{split}.json` ({"data": [{question_id, question, image_id, answers}]});
  images in train_images/ (val too) or {split}_images/; OCR tokens from
  `TextVQA_Rosetta_OCR_v0.2_{split}.json` ({"data": [{image_id, ocr_tokens}]}).
- OCR-VQA: `dataset.json` ({image_id: {imageURL, questions, answers, split: 1|2|3}});
  images/{image_id}{ext of imageURL}.
"""
from __future__ import annotations

from pathlib import Path

from sphinx_jax.eval import prompts
from sphinx_jax.eval.samples import Question, field, find_one, image_dir, image_under, read_json
from sphinx_jax.util.errors import UserError

_IMAGE_DIRS = ["images", "."]


def read_vqa(root: Path, split: str, **_) -> list[Question]:
  qfile = find_one(root, f"*{split}*questions*.json")
  afile = find_one(root, f"*{split}*annotations*.json", required=False)
  data = read_json(qfile)
  questions = field(data, "questions", str(qfile))
  subtype = data.get("data_subtype", split)
  answers = {}
  if afile is not None:
    answers = {a["question_id"]: a for a in field(read_json(afile), "annotations", str(afile))}
  if not questions:
    return []
  name = f"COCO_{subtype}_{{:012d}}.jpg"
  folder = image_dir(root, [subtype, *_IMAGE_DIRS], name.format(questions[0]["image_id"]))
  out = []
  for q in questions:
    where = f"{qfile} [question {q.get('question_id')}]"
    ann = answers.get(q["question_id"])
    if afile is not None and ann is None:
      raise UserError(f"{where}: no annotation in {afile}")
    out.append(Question(
        str(q["question_id"]), (folder / name.format(field(q, "image_id", where)),),
        prompts.short_answer(field(q, "question", where)),
        [a["answer"] for a in ann["answers"]] if ann else None,
        {"answer_type": ann.get("answer_type")} if ann else {}))
  return out


def read_gqa(root: Path, split: str, **_) -> list[Question]:
  qfile = find_one(root, f"{split}_questions.json")
  data = read_json(qfile)
  if not data:
    return []
  first = next(iter(data.values()))
  folder = image_dir(root, _IMAGE_DIRS, f"{first['imageId']}.jpg")
  out = []
  for qid, q in data.items():
    where = f"{qfile} [{qid}]"
    image = image_under(folder, f"{field(q, 'imageId', where)}.jpg", where)
    out.append(Question(str(qid), (image,), prompts.short_answer(field(q, "question", where)),
                        q.get("answer"), {"answer_type": q.get("types", {}).get("structural")}))
  return out


def read_vizwiz(root: Path, split: str, **_) -> list[Question]:
  qfile = find_one(root, f"{split}.json")
  data = read_json(qfile)
  if not data:
    return []
  folder = image_dir(root, [split, *_IMAGE_DIRS], data[0]["image"])
  out = []
  for i, q in enumerate(data):
    where = f"{qfile} [{i}]"
    answers = q.get("answers")
    out.append(Question(Path(field(q, "image", where)).stem,
                        (image_under(folder, q["image"], where),),
                        prompts.vizwiz(field(q, "question", where)),
                        [a["answer"] for a in answers] if answers else None,
                        {"answer_type": q.get("answer_type")}))
  return out


def read_textvqa(root: Path, split: str, ocr: bool = False, **_) -> list[Question]:
  qfile = find_one(root, f"TextVQA_0.5.1_{split}.json")
  data = field(read_json(qfile), "data", str(qfile))
  tokens = {}
  if ocr:
    ofile = find_one(root, f"TextVQA_Rosetta_OCR_v0.2_{split}.json")
    tokens = {d["image_id"]: d["ocr_tokens"] for d in field(read_json(ofile), "data", str(ofile))}
  if not data:
    return []
  folder = image_dir(root, ["train_images", f"{split}_images", *_IMAGE_DIRS],
                     f"{data[0]['image_id']}.jpg")
  out = []
  for q in data:
    where = f"{qfile} [question {q.get('question_id')}]"
    image_id = field(q, "image_id", where)
    question = field(q, "question", where)
    if ocr:
      if image_id not in tokens:
        raise UserError(f"{where}: image {image_id} has no OCR tokens")
      question = prompts.textvqa_ocr(question, tokens[image_id])
    else:
      question = prompts.short_answer(question)
    out.append(Question(str(field(q, "question_id", where)),
                        (image_under(folder, f"{image_id}.jpg", where),),
                        question, q.get("answers")))
  return out


_OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}


def read_ocrvqa(root: Path, split: str, **_) -> list[Question]:
  if split not in _OCRVQA_SPLITS:
    raise UserError(f"OCR-VQA split {split!r}: expected one of {sorted(_OCRVQA_SPLITS)}")
  dfile = find_one(root, "dataset.json")
  out = []
  for image_id, item in read_json(dfile).items():
    if item.get("split") != _OCRVQA_SPLITS[split]:
      continue
    where = f"{dfile} [{image_id}]"
    ext = Path(str(item.get("imageURL", ""))).suffix or ".jpg"
    path = image_under(root / "images", f"{image_id}{ext}", where)
    for i, (q, a) in enumerate(zip(field(item, "questions", where), field(item, "answers", where))):
      out.append(Question(f"{image_id}/{i}", (path,), prompts.short_answer(q), a))
  return out
