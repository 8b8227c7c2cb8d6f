"""A synthetic vision-language world, seeded and drawn locally, so the whole method (two-domain
pre-training, mixing, multi-task fine-tuning, evaluation) runs with no downloads.

A scene is 1-4 objects on a non-square image (so pad-to-square matters): shapes in colours and two
sizes, each colour x shape at most once (so "the red circle" names one object), kept GAP pixels
apart, and sometimes a short word in PIL's bitmap font (no anti-aliasing, the same pixels on every
FreeType build). Boxes are pixels [x1, y1, x2, y2] with exclusive ends: an object's drawn pixels
span exactly columns x1..x2-1 and rows y1..y2-1.

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
import functools
import io
import json
from pathlib import Path

import numpy as np
import sentencepiece as spm
from PIL import Image, ImageDraw, ImageFont

from sphinx_jax.data import tasks, templates
from sphinx_jax.data.mimic_it import MimicIt
from sphinx_jax.data.pairs import Pairs
from sphinx_jax.data.sources import Captions, Conversations, Task, TextCorpus

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 16, "large": 26}
WORDS = ("cat", "dog", "sun", "map", "box", "cup", "hat", "pen", "key", "car")
IMAGE_SIZE = (80, 64)
GAP = 4
# Corners sit on a 10-px grid of the 80-px padded square the model sees: the pitch of the
# sub-image crops' patches (docs/architecture.md has the arithmetic), so a box is a choice of
# cells and REC at laptop scale is about finding the object, not regressing pixels.
GRID = 10
FRAMES = 4  # frames per video (MimicIt(num_frames=FRAMES) keeps them all)
SHOTS = 2  # images per in-context set: the examples, then the query
VERSION = 5  # bump when what write_world writes changes (the recipe then rebuilds its world)
STEP = 8  # pixels a video's shape moves per frame
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
OCR_QUESTION = "What word is written in the image?"
DIFFERENCE_QUESTION = "What is the difference between the two images?"
FACTS = ("A circle is round.", "A square has four equal sides.", "A triangle has three sides.",
         "Red, green, blue and yellow are colours.", "A small shape is smaller than a large one.",
         "A square has four corners.", "A circle has no corners.", "A triangle has three corners.",
         "Words are written in black.", "Mixing blue and yellow gives green.")


@functools.cache
def _font() -> ImageFont.ImageFont:
  return ImageFont.load_default_imagefont()


def _apart(a, b) -> bool:
  return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _place(rng, taken, w: int, h: int):
  """A box of w x h inside the image with its corner on the GRID of the padded square, GAP away
  from every box taken, or None."""
  pad = (max(IMAGE_SIZE) - IMAGE_SIZE[1]) // 2  # rows above the image in its padded square
  xs = range(0, IMAGE_SIZE[0] - w + 1, GRID)
  ys = range(-pad % GRID, IMAGE_SIZE[1] - h + 1, GRID)
  for _ in range(100):
    x, y = int(xs[int(rng.integers(len(xs)))]), int(ys[int(rng.integers(len(ys)))])
    box = [x, y, x + w, y + h]
    if all(_apart(box, t) for t in taken):
      return box
  return None


def position(box) -> str:
  """Where a box's centre is: `at the top left`, `at the bottom` (middle third), ..."""
  w, h = IMAGE_SIZE
  cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
  column = "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else ""
  return f"at the {'top' if cy < h / 2 else 'bottom'} {column}".rstrip()


def _object(colour: str, shape: str, size: str, box) -> dict:
  return {"colour": colour, "shape": shape, "size": size, "box": box, "position": position(box)}


def scene(rng) -> dict:
  """1-4 objects (distinct colour x shape) and, half the time, a word."""
  kinds = rng.permutation(len(COLOURS) * len(SHAPES))[:int(rng.integers(1, 5))]
  objects, taken = [], []
  for k in kinds:
    size = ("small", "large")[int(rng.integers(2))]
    box = _place(rng, taken, SIZES[size], SIZES[size])
    if box is not None:
      taken.append(box)
      objects.append(_object(list(COLOURS)[k // len(SHAPES)], SHAPES[k % len(SHAPES)], size, box))
  word = None
  if rng.random() < 0.5:
    text = WORDS[int(rng.integers(len(WORDS)))]
    left, top, right, bottom = _font().getbbox(text)
    box = _place(rng, taken, right - left, bottom - top)
    if box is not None:
      word = {"text": text, "box": box, "position": position(box)}
  return {"objects": objects, "word": word}


def render(s: dict) -> Image.Image:
  image = Image.new("RGB", IMAGE_SIZE, (255, 255, 255))
  draw = ImageDraw.Draw(image)
  for o in s["objects"]:
    x1, y1, x2, y2 = o["box"]
    fill = COLOURS[o["colour"]]
    if o["shape"] == "circle":
      draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif o["shape"] == "square":
      draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    else:
      draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=fill)
  if s["word"]:
    left, top, _, _ = _font().getbbox(s["word"]["text"])
    x, y = s["word"]["box"][:2]
    draw.text((x - left, y - top), s["word"]["text"], fill=(0, 0, 0), font=_font())
  return image


def png(s: dict) -> bytes:
  out = io.BytesIO()
  render(s).save(out, format="PNG")
  return out.getvalue()


def _name(o: dict) -> str:
  return f"{o['colour']} {o['shape']}"


def _listing(parts: list[str]) -> str:
  return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def real_caption(s: dict) -> str:
  """Short, as web alt-text: `a red circle and a blue square`."""
  return _listing([f"a {_name(o)}" for o in s["objects"]])


def dense_caption(s: dict) -> str:
  """Every object's size, colour and place grouped by shape, each shape's count, the total and
  the word: `The image shows 2 circles: a small red one at the top left and a large blue one
  at the bottom; 1 square: ... There are 3 shapes.` Shape first, where the short captions put
  colour first, so the two domains bind attributes in both directions."""
  groups = []
  for shape in dict.fromkeys(o["shape"] for o in s["objects"]):
    these = [o for o in s["objects"] if o["shape"] == shape]
    groups.append(f"{len(these)} {shape}{'' if len(these) == 1 else 's'}: " + _listing(
        [f"a {o['size']} {o['colour']} one {o['position']}" for o in these]))
  n = len(s["objects"])
  text = (f"The image shows {'; '.join(groups)}. "
          f"There {'is' if n == 1 else 'are'} {n} shape{'' if n == 1 else 's'}.")
  if s["word"]:
    text += f" The word \"{s['word']['text']}\" is written {s['word']['position']}."
  return text


def alternatives(s: dict, kind: str, rng) -> list[str]:
  """Tags (`tags`) of scenes that differ from `s` in one thing of `kind` (the hard negatives of
  the towers' pre-training and the candidates of their zero-shot tests): `colour` / `shape` (one
  object's, keeping colour x shape unique), `count` (an object dropped, or one added), `word`
  (another word written), `position` (an object said to be elsewhere). [] when `s` allows none."""
  objects = s["objects"]
  names = {_name(o) for o in objects}
  o = objects[int(rng.integers(len(objects)))] if objects else None
  scenes = []
  if kind == "colour" and o:
    scenes = [_swap(s, o, colour=c) for c in COLOURS if f"{c} {o['shape']}" not in names]
  elif kind == "shape" and o:
    scenes = [_swap(s, o, shape=h) for h in SHAPES if f"{o['colour']} {h}" not in names]
  elif kind == "count":
    if len(objects) > 1:
      scenes.append(dict(s, objects=[p for p in objects if p is not o]))
    free = [(c, h) for c in COLOURS for h in SHAPES if f"{c} {h}" not in names]
    if len(objects) < 4:
      c, h = free[int(rng.integers(len(free)))]
      box = [int(v) for v in rng.integers(0, min(IMAGE_SIZE) - SIZES["small"], 2)]
      box += [box[0] + SIZES["small"], box[1] + SIZES["small"]]
      scenes.append(dict(s, objects=objects + [_object(c, h, "small", box)]))
  elif kind == "word" and s["word"]:
    scenes = [dict(s, word=dict(s["word"], text=w)) for w in WORDS if w != s["word"]["text"]]
  elif kind == "position" and o:
    here = o["position"]
    places = [f"at the {v} {h}".rstrip() for v in ("top", "bottom") for h in ("left", "", "right")]
    scenes = [_swap(s, o, position=p) for p in places if p != here]
  return [tags(a) for a in scenes]


def _swap(s: dict, o: dict, **change) -> dict:
  return dict(s, objects=[dict(p, **change) if p is o else p for p in s["objects"]])


def negatives(s: dict, rng, kinds=("colour", "shape", "count", "word", "position"),
              n: int = 3) -> list[str]:
  """`n` hard negative captions of `s`, each of a different kind where the scene allows."""
  out = []
  for kind in rng.permutation(kinds):
    found = alternatives(s, str(kind), rng)
    if found:
      out.append(found[int(rng.integers(len(found)))])
    if len(out) == n:
      break
  return out


def tags(s: dict) -> str:
  """Alt-text for the towers' pre-training, every fact in few tokens:
  `small red circle top left, large blue square bottom; 2 shapes; word cat top right`."""
  text = ", ".join(f"{o['size']} {_name(o)} {o['position'][7:]}".rstrip()
                   for o in s["objects"])
  n = len(s["objects"])
  text += f"; {n} shape{'' if n == 1 else 's'}"
  if s["word"]:
    text += f"; word {s['word']['text']} {s['word']['position'][7:]}".rstrip()
  return text


def regions(s: dict) -> list[dict]:
  """Each object's and the word's phrase and pixel box: `small red circle`, `word cat`."""
  out = [{"phrase": f"{o['size']} {_name(o)}", "box": o["box"]} for o in s["objects"]]
  if s["word"]:
    out.append({"phrase": f"word {s['word']['text']}", "box": s["word"]["box"]})
  return out


def questions(s: dict, rng) -> dict[str, tuple[str, str]]:
  """One (question, answer) per VQA type the scene allows: colour (of a shape seen once), shape
  (of a colour seen once), count and yes/no (half of them about a present object)."""
  objects = s["objects"]
  out = {}
  shapes = [o["shape"] for o in objects]
  single = [o for o in objects if shapes.count(o["shape"]) == 1]
  if single:
    o = single[int(rng.integers(len(single)))]
    out["colour"] = (f"What colour is the {o['shape']}?", o["colour"])
  colours = [o["colour"] for o in objects]
  single = [o for o in objects if colours.count(o["colour"]) == 1]
  if single:
    o = single[int(rng.integers(len(single)))]
    out["shape"] = (f"What shape is the {o['colour']} object?", o["shape"])
  shape = SHAPES[int(rng.integers(len(SHAPES)))]
  out["count"] = (f"How many {shape}s are there?", str(shapes.count(shape)))
  if rng.random() < 0.5:
    name = _name(objects[int(rng.integers(len(objects)))])
  else:
    name = f"{list(COLOURS)[int(rng.integers(len(COLOURS)))]} {SHAPES[int(rng.integers(3))]}"
  present = any(_name(o) == name for o in objects)
  out["yesno"] = (f"Is there a {name}?", "yes" if present else "no")
  return out


DIALOG_TURNS = 4  # short-answer turns per training dialog at most (they fit a stage-2 row)
REC_TURNS = 3  # REC turns per training dialog at most (boxes are long)


def vqa_dialog(s: dict, rng) -> list[tuple[str, str]]:
  """Up to DIALOG_TURNS short-answer turns about one scene (colour of each shape seen once, shape
  of each colour seen once, each shape's count, yes/no, the word), in random order, each turn
  dropped whose answer the earlier turns already give away: the model must read every answer
  from the image, as when it is asked one question."""
  objects = s["objects"]
  shapes, colours = [o["shape"] for o in objects], [o["colour"] for o in objects]
  pool = [("colour", o["shape"], o["colour"]) for o in objects if shapes.count(o["shape"]) == 1]
  pool += [("shape", o["colour"], o["shape"]) for o in objects
           if colours.count(o["colour"]) == 1]
  pool += [("count", shape, str(shapes.count(shape))) for shape in SHAPES]
  names = {_name(o) for o in objects}
  absent = [f"{c} {h}" for c in COLOURS for h in SHAPES if f"{c} {h}" not in names]
  asked = [sorted(names)[int(rng.integers(len(names)))], absent[int(rng.integers(len(absent)))]]
  pool += [("yesno", name, "yes" if name in names else "no") for name in asked]
  if s["word"]:
    pool.append(("ocr", "", s["word"]["text"]))
  known, counts, turns = {}, {}, []  # known: "colour shape" -> present?; counts: shape -> n
  for i in rng.permutation(len(pool)):
    kind, about, answer = pool[int(i)]
    if _given(kind, about, known, counts):
      continue
    question = {"colour": f"What colour is the {about}?",
                "shape": f"What shape is the {about} object?",
                "count": f"How many {about}s are there?", "yesno": f"Is there a {about}?",
                "ocr": OCR_QUESTION}[kind]
    turns.append((f"{question}\n{tasks.VQA}", answer))
    if kind == "colour":
      known[f"{answer} {about}"], counts[about] = True, 1
    elif kind == "shape":
      known[f"{about} {answer}"] = True
    elif kind == "count":
      counts[about] = int(answer)
    elif kind == "yesno":
      known[about] = answer == "yes"
    if len(turns) == DIALOG_TURNS:
      break
  return turns


def _given(kind: str, about: str, known: dict, counts: dict) -> bool:
  """Whether earlier turns (objects known present or absent, shape counts) answer this one."""
  present = [name for name, yes in known.items() if yes]
  if kind == "colour":
    return any(name.endswith(f" {about}") for name in present)
  if kind == "shape":
    return any(name.startswith(f"{about} ") for name in present)
  if kind == "count":
    return about in counts
  if kind == "yesno":
    shape = about.split()[1]
    return about in known or counts.get(shape) == 0 or (
        counts.get(shape) == 1 and any(n.endswith(f" {shape}") for n in present))
  return False


def rec_dialog(s: dict, rng) -> list[tuple[str, str]]:
  """REC turns for up to REC_TURNS of the scene's objects, in random order (one object's box
  says nothing of another's)."""
  order = rng.permutation(len(s["objects"]))[:REC_TURNS]
  return [tasks.rec({"phrase": f"the {_name(s['objects'][int(i)])}",
                     "box": s["objects"][int(i)]["box"]}, IMAGE_SIZE)[0] for i in order]


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
  names = {_name(p) for p in objects}
  free = [c for c in COLOURS if f"{c} {o['shape']}" not in names]
  if free and (len(objects) == 1 or rng.random() < 0.5):
    colour = free[int(rng.integers(len(free)))]
    objects[j] = dict(o, colour=colour)
    return dict(s, objects=objects), f"The {o['shape']} changed from {o['colour']} to {colour}."
  del objects[j]
  return dict(s, objects=objects), f"The {_name(o)} is gone."


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
    frames.append({"objects": [_object(colour, shape, size, [x1, y1, x1 + side, y1 + side])],
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
        self.add("rec", {"image": image, "phrase": f"the {_name(o)}", "box": o["box"]})
      self.add("vqa_dialogs", _conversation(image, vqa_dialog(s, self.rng)))
      self.add("rec_dialogs", _conversation(image, rec_dialog(s, self.rng)))
      labelled = [{"label": _name(o), "box": o["box"]} for o in s["objects"]]
      self.add("detection", {"image": image, "objects": labelled})
      self.add("grounded", {"image": image, "caption": real_caption(s), "regions": [
          {"phrase": f"a {_name(o)}", "boxes": [o["box"]]} for o in s["objects"]]})

  def multi_image(self, n: int, shots: int = SHOTS):
    for i in range(n):
      a = scene(self.rng)
      b, answer = _changed(a, self.rng)
      self.instruction("difference", f"DIF_{i:05d}", DIFFERENCE_QUESTION, answer, [a, b])
      frames, way = _video(self.rng)
      o = frames[0]["objects"][0]
      self.instruction("video", f"VID_{i:05d}", f"Which way does the {_name(o)} move?", way,
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
