"""Adapters for yes/no, grounding, captioning and free-form benchmarks, over files in `root`.

- POPE: `*pope*.json` / `*pope*.jsonl`, one JSON per line ({question_id, image, text, label},
  optional category; else the split from the file name: coco_pope_{random,popular,adversarial});
  COCO images in val2014/, images/ or root.
- MME: the release folder (`MME_Benchmark_release_version/` or root itself), one folder per
  subtask: either images/ + questions_answer_YES_NO/*.txt, or images and .txt side by side; each
  .txt holds "question<TAB>Yes|No" lines for the image of the same name.
- RefCOCO / RefCOCO+ / RefCOCOg: LLaMA2-Accessory's `{name}_{split}.json` ([{image_path,
  question (the expression), question_id "height{H}_width{W}", gt_answers [x1, y1, x2, y2]}]), or
  the refer toolkit's `refs(*).p` + `instances.json` (bbox x, y, w, h); images from COCO
  train2014/, images/ or root.
- COCO captions: Karpathy's `dataset_coco.json` ({"images": [{filepath, filename, cocoid, split,
  sentences: [{raw}]}]}); k-shot demonstrations from a seeded pool (see `read_coco`).
- LLaVA-Bench (in the wild): `questions.jsonl` ({question_id, image, text, category}) + images/.
- MM-Vet: `mm-vet.json` ({id: {imagename, question, answer}}) + images/.
"""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

from PIL import Image

from sphinx_jax.data.example import IMAGE
from sphinx_jax.eval import prompts
from sphinx_jax.eval.samples import (Question, field, find_one, image_dir, image_under, read_json,
                                     read_jsonl)
from sphinx_jax.eval.yesno import MME_COGNITION, MME_PERCEPTION
from sphinx_jax.util.errors import UserError


def read_pope(root: Path, split: str | None = None, **_) -> list[Question]:
  files = sorted({*root.glob("*pope*.json"), *root.glob("*pope*.jsonl")})
  if not files:
    raise FileNotFoundError(f"{root}: no POPE file (*pope*.json / *pope*.jsonl)")
  out, folder = [], None
  for path in files:
    for q in read_jsonl(path):
      where = f"{path} [question {q.get('question_id')}]"
      folder = folder or image_dir(root, ["val2014", "images", "."], field(q, "image", where))
      category = q.get("category") or next(
          (c for c in ("adversarial", "popular", "random") if c in path.name), path.stem)
      out.append(Question(f"{category}/{field(q, 'question_id', where)}",
                          (image_under(folder, q["image"], where),),
                          prompts.yes_no(field(q, "text", where)), q.get("label"),
                          {"category": category}))
  return out


def _mme_pairs(task_dir: Path) -> list[tuple[Path, Path]]:
  """(question file, image) pairs of one MME subtask folder, in either release layout."""
  qa = task_dir / "questions_answer_YES_NO"
  texts, images = (qa, task_dir / "images") if qa.is_dir() else (task_dir, task_dir)
  pairs = []
  for txt in sorted(texts.glob("*.txt")):
    image = next((images / (txt.stem + e) for e in (".jpg", ".png", ".jpeg")
                  if (images / (txt.stem + e)).is_file()), None)
    if image is None:
      raise FileNotFoundError(f"{txt}: no image {txt.stem}.jpg/.png in {images}")
    pairs.append((txt, image))
  return pairs


def read_mme(root: Path, split: str | None = None, **_) -> list[Question]:
  base = root / "MME_Benchmark_release_version" if (root / "MME_Benchmark_release_version"
                                                     ).is_dir() else root
  tasks = [t for t in MME_PERCEPTION + MME_COGNITION if (base / t).is_dir()]
  if not tasks:
    raise FileNotFoundError(f"{base}: no MME subtask folder ({', '.join(MME_PERCEPTION)}, ...)")
  out = []
  for task in tasks:
    for txt, image in _mme_pairs(base / task):
      lines = [ln for ln in txt.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
      for i, line in enumerate(lines):
        parts = line.split("\t")
        if len(parts) != 2:
          raise UserError(f"{txt}:{i + 1}: expected 'question<TAB>answer'")
        out.append(Question(f"{task}/{txt.stem}/{i}", (image,), prompts.short_answer(parts[0]),
                            parts[1].strip(), {"subtask": task, "image": txt.stem}))
  return out


def read_rec(root: Path, split: str, dataset: str = "refcoco", **_) -> list[Question]:
  accessory = root / f"{dataset}_{split}.json"
  items = _accessory_rec(root, accessory) if accessory.is_file() else _refer(root, split, dataset)
  return [Question(sid, (path,), prompts.REC.format(text), box, {"width": w, "height": h})
          for sid, path, text, box, w, h in items]


_COCO_TRAIN = ["train2014", "images/mscoco/images/train2014", "images", "."]


def _accessory_rec(root: Path, path: Path):
  data = read_json(path)
  if not data:
    return
  first = data[0]["image_path"]
  if (root / first).is_file():  # root mirrors Accessory's tree (data/coco/train2014/...)
    folder, keep = root, lambda name: name
  else:
    folder, keep = image_dir(root, _COCO_TRAIN, Path(first).name), lambda name: Path(name).name
  for i, d in enumerate(data):
    where = f"{path} [{i}]"
    image = image_under(folder, keep(field(d, "image_path", where)), where)
    size = re.search(r"height(\d+)_width(\d+)", str(d.get("question_id", "")))
    h, w = (int(size.group(1)), int(size.group(2))) if size else _size(image)[::-1]
    yield f"{i}", image, field(d, "question", where), field(d, "gt_answers", where), w, h


def _size(path: Path) -> tuple[int, int]:
  with Image.open(path) as image:  # reads the header only
    return image.size


def _refer(root: Path, split: str, dataset: str):
  # the refer toolkit's data/ folder holds one folder per dataset, and images/ beside them
  files = root / dataset if (root / dataset).is_dir() else root
  refs_file = find_one(files, "refs(*).p")
  with open(refs_file, "rb") as f:
    refs = pickle.load(f, encoding="latin1")  # the refer toolkit's own (Python 2) format
  instances_file = find_one(files, "instances.json")
  instances = read_json(instances_file)
  images = {im["id"]: im for im in instances["images"]}
  boxes = {a["id"]: a["bbox"] for a in instances["annotations"]}
  chosen = [r for r in refs if r["split"] == split]
  if not chosen:
    return
  folder = image_dir(root, _COCO_TRAIN, images[chosen[0]["image_id"]]["file_name"])
  for r in chosen:
    im = images[r["image_id"]]
    x, y, w, h = boxes[r["ann_id"]]
    image = image_under(folder, im["file_name"], f"{instances_file} [image {im['id']}]")
    for s in r["sentences"]:
      yield (f"{r['ref_id']}/{s['sent_id']}", image, s["sent"], [x, y, x + w, y + h],
             im["width"], im["height"])


POOL_SIZE = 2048  # the few-shot harness's demonstration pool (OpenFlamingo / Otter eval)


def read_coco(root: Path, split: str, shots: int = 0, seed: int = 0, **_) -> list[Question]:
  """Karpathy-split captions. With `shots` k, each query gets k demonstrations -- (image, its
  first caption) -- drawn without replacement from a pool of POOL_SIZE train/restval images
  picked with `seed`, per query with a generator seeded by (seed, image id), so a query's
  demonstrations do not depend on batching or on resuming. Each demonstration is a turn of the
  conversation: (IMAGE + CAPTION instruction, caption), the query the last such question."""
  dfile = find_one(root, "dataset_coco.json")
  images = field(read_json(dfile), "images", str(dfile))
  queries = [im for im in images if im.get("split") == split]
  if not queries:
    return []
  folder = image_dir(root, [queries[0].get("filepath", ""), "images", "."],
                     queries[0]["filename"])
  per_split = folder == root / queries[0].get("filepath", "")  # val2014/, train2014/ layout

  def path(im):
    name = str(Path(im.get("filepath", ""), im["filename"])) if per_split else im["filename"]
    return image_under(root if per_split else folder, name, f"{dfile} [{im.get('cocoid')}]")
  pool = []
  if shots:
    train = [im for im in images if im.get("split") in ("train", "restval")]
    if len(train) < shots:
      raise UserError(f"{dfile}: {len(train)} train images, fewer than {shots} shots")
    pool = random.Random(seed).sample(train, min(POOL_SIZE, len(train)))
  out = []
  for im in queries:
    demos = random.Random(f"{seed}/{im['cocoid']}").sample(pool, shots) if shots else []
    marker = IMAGE if shots else ""
    history = tuple((marker + prompts.CAPTION, d["sentences"][0]["raw"].strip()) for d in demos)
    out.append(Question(str(im["cocoid"]), tuple(path(d) for d in [*demos, im]),
                        marker + prompts.CAPTION, [s["raw"] for s in im["sentences"]],
                        {"image": im["filename"]}, history))
  return out


def read_llava_bench(root: Path, split: str | None = None, **_) -> list[Question]:
  qfile = find_one(root, "questions.jsonl")
  out = []
  for i, q in enumerate(read_jsonl(qfile)):
    where = f"{qfile}:{i + 1}"
    out.append(Question(str(field(q, "question_id", where)),
                        (image_under(root / "images", field(q, "image", where), where),),
                        field(q, "text", where),
                        None, {"category": q.get("category")}))
  return out


def read_mmvet(root: Path, split: str | None = None, **_) -> list[Question]:
  qfile = find_one(root, "mm-vet.json")
  out = []
  for key, q in read_json(qfile).items():
    where = f"{qfile} [{key}]"
    out.append(Question(key, (image_under(root / "images", field(q, "imagename", where), where),),
                        field(q, "question", where), q.get("answer"),
                        {"capability": q.get("capability")}))
  return out
