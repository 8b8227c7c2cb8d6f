"""What is said about a synthetic scene (data.synthetic_scenes): captions of the two stage-1
domains (short "real", dense "synthetic"), the towers' alt-text tags with hard negatives and
region phrases, VQA questions by type, and the multi-turn VQA and REC dialogs of stage 2.
"""
from __future__ import annotations

from sphinx_jax.data import tasks
from sphinx_jax.data.synthetic_scenes import (COLOURS, IMAGE_SIZE, PLACES, SHAPES, SIZES, WORDS,
                                             object_record)

OCR_QUESTION = "What word is written in the image?"


def object_name(o: dict) -> str:
  return f"{o['colour']} {o['shape']}"


def _listing(parts: list[str]) -> str:
  return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def real_caption(s: dict) -> str:
  """Short, as web alt-text: `a red circle and a blue square`."""
  return _listing([f"a {object_name(o)}" for o in s["objects"]])


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
  names = {object_name(o) for o in objects}
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
      scenes.append(dict(s, objects=objects + [object_record(c, h, "small", box)]))
  elif kind == "word" and s["word"]:
    scenes = [dict(s, word=dict(s["word"], text=w)) for w in WORDS if w != s["word"]["text"]]
  elif kind == "position" and o:
    here = o["position"]
    scenes = [_swap(s, o, position=p) for p in PLACES if p != here]
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
  text = ", ".join(f"{o['size']} {object_name(o)} {o['position'][7:]}".rstrip()
                   for o in s["objects"])
  n = len(s["objects"])
  text += f"; {n} shape{'' if n == 1 else 's'}"
  if s["word"]:
    text += f"; word {s['word']['text']} {s['word']['position'][7:]}".rstrip()
  return text


def regions(s: dict) -> list[dict]:
  """Each object's and the word's phrase and pixel box: `small red circle`, `word cat`."""
  out = [{"phrase": f"{o['size']} {object_name(o)}", "box": o["box"]} for o in s["objects"]]
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
    name = object_name(objects[int(rng.integers(len(objects)))])
  else:
    name = f"{list(COLOURS)[int(rng.integers(len(COLOURS)))]} {SHAPES[int(rng.integers(3))]}"
  present = any(object_name(o) == name for o in objects)
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
  names = {object_name(o) for o in objects}
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
  return [tasks.rec({"phrase": f"the {object_name(s['objects'][int(i)])}",
                     "box": s["objects"][int(i)]["box"]}, IMAGE_SIZE)[0] for i in order]
