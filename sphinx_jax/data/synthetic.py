"""A synthetic vision-language world, seeded and drawn locally, so the whole method (two-domain
pre-training, mixing, multi-task fine-tuning, evaluation) runs with no downloads. Scenes are
data.synthetic_scenes, what is said about them data.synthetic_text; this module writes the world.

`write_world(root, n_train, n_eval, seed)` writes `train/` and `eval/` (eval from another seed;
every record keeps its answer, box or question type for scoring) in the formats the sources read:
towers (Pairs: `tags` alt-text with hard negatives, the towers' own pre-training), captions_real /
captions_synthetic (Captions: the two stage-1 domains, short vs dense), vqa (Task 'vqa', `type`
colour | shape | count | yesno), ocr (Task 'vqa'), rec, detection, grounded (Task records),
difference / in_context / video (MIMIC-IT, flat-JSON images), corpus (TextCorpus: text-only
documents) and scenes.jsonl; plus, at the root, tokenizer.model (SentencePiece on the world's
training text). `sources(root, split)` gives their specs.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import sentencepiece as spm

from sphinx_jax.data import tasks, templates
from sphinx_jax.data.mimic_it import MimicIt
from sphinx_jax.data.pairs import Pairs
from sphinx_jax.data.sources import Captions, Conversations, Task, TextCorpus
from sphinx_jax.data.synthetic_scenes import (COLOURS, IMAGE_SIZE, SHAPES, SIZES, object_record,
                                             png, scene)
from sphinx_jax.data.synthetic_text import (OCR_QUESTION, dense_caption, negatives, object_name,
                                           questions, real_caption, rec_dialog, regions, tags,
                                           vqa_dialog)

FRAMES = 4  # frames per video (MimicIt(num_frames=FRAMES) keeps them all)
SHOTS = 2  # images per in-context set: the examples, then the query
VERSION = 6  # bump when what write_world writes changes (the recipe then rebuilds its world)
STEP = 8  # pixels a video's shape moves per frame
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DIFFERENCE_QUESTION = "What is the difference between the two images?"
FACTS = ("A circle is round.", "A square has four equal sides.", "A triangle has three sides.",
         "Red, green, blue and yellow are colours.", "A small shape is smaller than a large one.",
         "A square has four corners.", "A circle has no corners.", "A triangle has three corners.",
         "Words are written in black.", "Mixing blue and yellow gives green.")


def _conversation(image: str, turns: list[tuple[str, str]]) -> dict:
  """A LLaVA-format dialog record (data.sources.Conversations)."""
  messages = []
  for i, (q, a) in enumerate(turns):
    messages += [{"from": "human", "value": f"<image>\n{q}" if i == 0 else q},
                 {"from": "gpt", "value": a}]
  return {"image": image, "conversations": messages}


def _changed(s: dict, rng) -> tuple[dict, str]:
  """A copy of `s` with one object removed or recoloured, and the sentence saying so."""
  objects = list(s["objects"])
  j = int(rng.integers(len(objects)))
  o = objects[j]
  names = {object_name(p) for p in objects}
  free = [c for c in COLOURS if f"{c} {o['shape']}" not in names]
  if free and (len(objects) == 1 or rng.random() < 0.5):
    colour = free[int(rng.integers(len(free)))]
    objects[j] = dict(o, colour=colour)
    return dict(s, objects=objects), f"The {o['shape']} changed from {o['colour']} to {colour}."
  del objects[j]
  return dict(s, objects=objects), f"The {object_name(o)} is gone."


def _video(rng) -> tuple[list[dict], str]:
  """FRAMES scenes of one shape moving STEP pixels a frame, and the question's answer."""
  colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
  shape, size = SHAPES[int(rng.integers(3))], ("small", "large")[int(rng.integers(2))]
  way = list(MOVES)[int(rng.integers(len(MOVES)))]
  dx, dy = MOVES[way]
  side, travel = SIZES[size], STEP * (FRAMES - 1)
  x = int(rng.integers(0, IMAGE_SIZE[0] - side - abs(dx) * travel + 1)) + max(-dx, 0) * travel
  y = int(rng.integers(0, IMAGE_SIZE[1] - side - abs(dy) * travel + 1)) + max(-dy, 0) * travel
  frames = []
  for f in range(FRAMES):
    x1, y1 = x + dx * STEP * f, y + dy * STEP * f
    frames.append({"objects": [object_record(colour, shape, size, [x1, y1, x1 + side, y1 + side])],
                   "word": None})
  return frames, way


class _Split:
  """Collects one split's records and images, then writes them."""

  def __init__(self, root: Path, rng):
    self.root, self.rng = root, rng
    self.records: dict[str, list] = {}
    self.mimic: dict[str, dict] = {}  # name -> {"data": ..., "images": ..., "config": ...}
    (root / "images").mkdir(parents=True, exist_ok=True)

  def add(self, name: str, record: dict):
    self.records.setdefault(name, []).append(record)

  def instruction(self, name: str, ins_id: str, question: str, answer: str, frames: list[dict],
                  **extra):
    m = self.mimic.setdefault(name, {"data": {}, "images": {}, "config": {}})
    ids = [f"{ins_id}_IMG_{i}" for i in range(len(frames))]
    m["data"][ins_id] = {"instruction": question, "answer": answer, "image_ids": ids,
                         "rel_ins_ids": [], **extra}
    m["images"].update({i: base64.b64encode(png(f)).decode() for i, f in zip(ids, frames)})

  def scenes(self, n: int):
    for i in range(n):
      s = scene(self.rng)
      image = f"images/{i:05d}.png"
      (self.root / image).write_bytes(png(s))
      self.add("scenes", {"image": image, **s})
      self.add("captions_real", {"image": image, "caption": real_caption(s)})
      self.add("captions_synthetic", {"image": image, "caption": dense_caption(s)})
      self.add("towers", {"image": image, "caption": tags(s),
                          "negatives": negatives(s, self.rng), "regions": regions(s)})
      for kind, (q, a) in questions(s, self.rng).items():
        self.add("vqa", {"image": image, "question": q, "answer": a, "type": kind})
      if s["word"]:
        self.add("ocr", {"image": image, "question": OCR_QUESTION, "answer": s["word"]["text"],
                         "type": "ocr", "box": s["word"]["box"]})
      for o in s["objects"]:
        self.add("rec", {"image": image, "phrase": f"the {object_name(o)}", "box": o["box"]})
      self.add("vqa_dialogs", _conversation(image, vqa_dialog(s, self.rng)))
      self.add("rec_dialogs", _conversation(image, rec_dialog(s, self.rng)))
      labelled = [{"label": object_name(o), "box": o["box"]} for o in s["objects"]]
      self.add("detection", {"image": image, "objects": labelled})
      self.add("grounded", {"image": image, "caption": real_caption(s), "regions": [
          {"phrase": f"a {object_name(o)}", "boxes": [o["box"]]} for o in s["objects"]]})

  def multi_image(self, n: int, shots: int = SHOTS):
    for i in range(n):
      a = scene(self.rng)
      b, answer = _changed(a, self.rng)
      self.instruction("difference", f"DIF_{i:05d}", DIFFERENCE_QUESTION, answer, [a, b])
      frames, way = _video(self.rng)
      o = frames[0]["objects"][0]
      self.instruction("video", f"VID_{i:05d}", f"Which way does the {object_name(o)} move?", way,
                       frames)
      group = [scene(self.rng) for _ in range(shots)]
      asked = [questions(s, self.rng) for s in group]
      kinds = [k for k in asked[0] if all(k in q for q in asked)]
      kind = kinds[int(self.rng.integers(len(kinds)))]
      ids = [f"FS_{i:05d}_{j}" for j in range(shots)]
      for ins_id, s, q in zip(ids, group, asked):
        self.instruction("in_context", ins_id, *q[kind], [s], type=kind)
      self.mimic["in_context"]["config"][ids[-1]] = ids[:-1]

  def write(self) -> dict[str, str]:
    paths = {}
    for name, records in self.records.items():
      paths[name] = _jsonl(self.root / f"{name}.jsonl", records)
    for name, m in self.mimic.items():
      paths[name] = _json(self.root / f"{name}_instructions.json", {"meta": {}, "data": m["data"]})
      paths[f"{name}_images"] = _json(self.root / f"{name}.json", m["images"])
      if m["config"]:
        paths[f"{name}_config"] = _json(self.root / f"{name}_train.json", m["config"])
    return paths


def _jsonl(path: Path, records) -> str:
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def _json(path: Path, value) -> str:
  path.write_text(json.dumps(value))
  return str(path)


def corpus(rng, n: int) -> list[dict]:
  """Text-only documents: facts about the world and descriptions of unseen scenes."""
  docs = []
  for _ in range(n):
    s = scene(rng)
    facts = [FACTS[int(i)] for i in rng.choice(len(FACTS), 2, replace=False)]
    docs.append({"content": " ".join(facts + [dense_caption(s)])})
  return docs


def _texts(split: _Split) -> list[str]:
  """What the model will read: captions, corpus, and every task as its chat prompt."""
  out = []
  for name, records in split.records.items():
    for r in records:
      if name.startswith("captions") or name == "towers":
        out.append(r["caption"])
      elif name.endswith("_dialogs"):
        messages = r["conversations"]
        out.append(templates.conversation_prompt(
            [(q["value"], a["value"]) for q, a in zip(messages[::2], messages[1::2])]))
      elif name in ("vqa", "ocr", "rec", "detection", "grounded"):
        task = {"ocr": "vqa", "grounded": "grounded_caption"}.get(name, name)
        out.append(templates.conversation_prompt(tasks.FORMATTERS[task](r, IMAGE_SIZE)))
  for m in split.mimic.values():
    out += [templates.conversation_prompt([(d["instruction"], d["answer"])])
            for d in m["data"].values()]
  return out


def train_tokenizer(texts: list[str], path: Path, vocab_size: int = 512) -> str:
  """A LLaMA-style SentencePiece BPE model (unk 0, bos 1, eos 2, byte fallback, digits split),
  written through a buffer: a model_prefix would be stored in the model and change its bytes."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      hard_vocab_limit=False, model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      character_coverage=1.0, byte_fallback=True, split_digits=True,
      normalization_rule_name="identity", remove_extra_whitespaces=False, num_threads=1,
      minloglevel=2)
  path.write_bytes(model.getvalue())
  return str(path)


def write_world(root, n_train: int, n_eval: int, seed: int = 0, vocab_size: int = 512) -> dict:
  """Writes the world under `root`; returns {"train": {name: path}, "eval": {...},
  "tokenizer"}. Multi-image samples (difference, in-context, video) number n // 4 (at least 1)."""
  root = Path(root)
  paths, texts = {}, []
  for k, (split, n) in enumerate((("train", n_train), ("eval", n_eval))):
    s = _Split(root / split, np.random.default_rng([seed, k]))
    s.scenes(n)
    s.multi_image(max(1, n // 4))
    paths[split] = s.write()
    if split == "train":
      texts = _texts(s)
  for k, (split, n) in enumerate((("train", n_train), ("eval", n_eval)), 2):
    docs = corpus(np.random.default_rng([seed, k]), max(1, n))
    paths[split]["corpus"] = _jsonl(root / split / "corpus.jsonl", docs)
    if split == "train":
      texts += [d["content"] for d in docs]
  paths["tokenizer"] = train_tokenizer(texts, root / "tokenizer.model", vocab_size)
  return paths


def sources(root, split: str = "train", frames: int = FRAMES) -> dict:
  """The source specs of one split of the world at `root`, by name (labels as the names), videos
  sampled to `frames` frames as MIMIC-IT's loader samples them; the files need not exist yet (a
  config names them before the world is written)."""
  root = Path(root)
  folder = root / split
  out = {name: Captions(str(folder / f"{name}.jsonl"), image_root=str(folder), name=name)
         for name in ("captions_real", "captions_synthetic")}
  for name, task in (("vqa", "vqa"), ("ocr", "vqa"), ("rec", "rec"), ("detection", "detection"),
                     ("grounded", "grounded_caption")):
    out[name] = Task(str(folder / f"{name}.jsonl"), task, image_root=str(folder), name=name)
  for name, kind in (("difference", "image"), ("in_context", "in_context"), ("video", "video")):
    config = folder / f"{name}_train.json" if kind == "in_context" else ""
    out[name] = MimicIt(str(folder / f"{name}_instructions.json"),
                        images=str(folder / f"{name}.json"), train_config=str(config), kind=kind,
                        num_frames=frames, name=name)
  for name in ("vqa_dialogs", "rec_dialogs"):
    out[name] = Conversations(str(folder / f"{name}.jsonl"), image_root=str(folder), name=name)
  out["corpus"] = TextCorpus(str(folder / "corpus.jsonl"), name="corpus")
  out["towers"] = Pairs(str(folder / "towers.jsonl"), image_root=str(folder), name="towers")
  return out
