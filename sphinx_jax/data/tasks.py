"""SPHINX's task-specific instructions (paper Table 1), turning task annotations into dialog turns.

Each formatter maps (record, image size (w, h)) to [(question, answer)]. Boxes and points come in
pixels of the original image ([x1, y1, x2, y2], [x, y]) and are written normalised to the padded
square the model sees (`image.pad_to_square`: the max edge, the image centred), 2 decimals, as
`[0.12,0.34,0.56,0.78]`; phrases are `<p>phrase</p>[box;box]`, points `<p>name</p>[x,y]`: the
forms the reference's grounding demo parses (accessory/demos/multi_turn_mm_box.py). A coordinate
outside [0, 1] raises ValueError (the record is skipped).

Instruction strings found in the reference code: short-answer VQA and REC
(accessory/eval_mm/annotations/annotation_config.json); detection, pose and grounded caption
(the demo's examples). Multiple choice and REG follow LLaVA-1.5, whose data SPHINX mixes; document
layout and relation are our wording (not in the reference code).
"""
from __future__ import annotations

import string

from sphinx_jax.util.errors import UserError

VQA = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
REC = "Please provide the bounding box coordinate of the region this sentence describes: {}."
REG = "Please provide a short description for this region: {}."
DETECTION = "Detect all objects shown in the image."
POSE = "Detect the key points of the person in the region {}."
LAYOUT = "Detect all layout elements shown in the document."
GROUNDED_CAPTION = ("Describe the image concisely. "
                    "Include the bounding box for each mentioned object.")
RELATION = "What is the relationship between <p>{}</p>{} and <p>{}</p>{}?"
CLASSIFY = "Classify the image."

# COCO keypoint order; names as the reference demo reads them ("left eye" -> left_eye).
KEYPOINTS = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder",
             "right shoulder", "left elbow", "right elbow", "left wrist", "right wrist", "left hip",
             "right hip", "left knee", "right knee", "left ankle", "right ankle")


def normalise(coords, size: tuple[int, int]) -> list[float]:
  """Pixel x/y coordinates -> fractions of the padded square (max edge, image centred)."""
  w, h = size
  side = max(w, h)
  dx, dy = (side - w) // 2, (side - h) // 2
  out = [(float(v) + (dy if i % 2 else dx)) / side for i, v in enumerate(coords)]
  if any(not 0.0 <= v <= 1.0 for v in out):
    raise UserError(f"coordinates {list(coords)} outside the {w}x{h} image")
  return out


def box(coords, size) -> str:
  """`[x1,y1,x2,y2]` (or `[x,y]` for a point) in padded-square fractions, 2 decimals."""
  if len(coords) not in (2, 4):
    raise UserError(f"a box has 4 numbers, a point 2: got {list(coords)}")
  if len(coords) == 4 and (coords[0] > coords[2] or coords[1] > coords[3]):
    raise UserError(f"box {list(coords)} is not [x1, y1, x2, y2]")
  return "[" + ",".join(f"{v:.2f}" for v in normalise(coords, size)) + "]"


def grounded(phrase: str, boxes, size) -> str:
  """`<p>phrase</p>[box;box]`: one phrase, all its boxes."""
  return f"<p>{phrase}</p>[" + ";".join(box(b, size)[1:-1] for b in boxes) + "]"


def vqa(r, size):
  return [(f"{r['question']}\n{VQA}", str(r["answer"]))]


def multiple_choice(r, size):
  letters = string.ascii_uppercase[:len(r["choices"])]
  options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(letters, r["choices"]))
  answer = r["answer"]
  answer = letters[answer] if isinstance(answer, int) else str(answer)
  return [(f"{r['question']}\n{options}\n{MULTIPLE_CHOICE}", answer)]


def rec(r, size):
  return [(REC.format(r["phrase"]), box(r["box"], size))]


def reg(r, size):
  return [(REG.format(box(r["box"], size)), r["phrase"])]


def _objects(objects, size) -> str:
  """Objects grouped by label in order of first appearance: `<p>a</p>[..;..] <p>b</p>[..]`."""
  groups: dict[str, list] = {}
  for o in objects:
    groups.setdefault(o["label"], []).append(o["box"])
  if not groups:
    raise UserError("no objects")
  return " ".join(grounded(label, boxes, size) for label, boxes in groups.items())


def detection(r, size):
  return [(DETECTION, _objects(r["objects"], size))]


def layout(r, size):
  return [(LAYOUT, _objects(r["elements"], size))]


def pose(r, size):
  """COCO keypoints [[x, y, v]] x 17; unlabelled ones (v == 0) are left out."""
  points = [f"<p>{name}</p>{box(p[:2], size)}"
            for name, p in zip(KEYPOINTS, r["keypoints"], strict=True) if p[2] > 0]
  if not points:
    raise UserError("no labelled keypoints")
  return [(POSE.format(box(r["box"], size)), " ".join(points))]


def grounded_caption(r, size):
  """`caption` with each region's phrase (first occurrence) followed by its boxes."""
  caption, spans = r["caption"], []
  for region in r["regions"]:
    at = caption.find(region["phrase"])
    if at < 0:
      raise UserError(f"phrase {region['phrase']!r} not in the caption")
    spans.append((at, at + len(region["phrase"]), region))
  text, end = "", 0
  for start, stop, region in sorted(spans, key=lambda s: s[0]):
    if start < end:
      raise UserError(f"phrase {region['phrase']!r} overlaps another")
    text += caption[end:start] + grounded(region["phrase"], region["boxes"], size)
    end = stop
  return [(GROUNDED_CAPTION, text + caption[end:])]


def relation(r, size):
  s, o = r["subject"], r["object"]
  question = RELATION.format(s["label"], box(s["box"], size), o["label"], box(o["box"], size))
  return [(question, f"{s['label']} {r['predicate']} {o['label']}")]


def classification(r, size):
  return [(CLASSIFY, f"This is a {r['label']}")]


FORMATTERS = {"vqa": vqa, "multiple_choice": multiple_choice, "rec": rec, "reg": reg,
              "detection": detection, "layout": layout, "pose": pose,
              "grounded_caption": grounded_caption, "relation": relation,
              "classification": classification}
