"""Referring expression comprehension (RefCOCO / RefCOCO+ / RefCOCOg): Acc@0.5.

As LLaMA2-Accessory scores it (accessory/eval_mm/evaluate.py, 'miou0.5'): the first `[...]` of
the answer (or, with none, the text before the first ']') must hold 4 comma-separated numbers,
else the box is (0, 0, 0, 0); the numbers are normalised to the padded square, so they map to
the image as x * max_edge - pad offset (`grounding.to_image`), the same as shifting the ground
truth into the square; IoU is torchvision's `box_iou` (no +1), a hit at IoU >= 0.5.
"""
from __future__ import annotations

import re

from sphinx_jax.inference import grounding

_BRACKET = re.compile(r"\[(.*?)\]")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
  """The answer's box in padded-square coordinates, or None when it has none."""
  found = _BRACKET.findall(text)
  body = found[0] if found else text.split("]")[0]
  parts = body.split(",")
  if len(parts) != 4:
    return None
  try:
    return tuple(float(p) for p in parts)
  except ValueError:
    return None


def box_iou(a, b) -> float:
  """IoU of two (x1, y1, x2, y2) boxes, torchvision's formula (areas may go negative as there)."""
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union else 0.0


def iou(prediction: str, box, width: int, height: int) -> float:
  """IoU of the answer's box, mapped from the padded square, with the pixel box `box`."""
  found = parse_box(prediction) or (0.0, 0.0, 0.0, 0.0)
  return box_iou(grounding.to_image(found, width, height), box)


def accuracy(records: list[dict]) -> dict:
  ious = [iou(r["prediction"], r["reference"], r["width"], r["height"]) for r in records]
  return {"samples": len(records), "acc@0.5": 100 * sum(v >= 0.5 for v in ious) / len(ious),
          "mean_iou": 100 * sum(ious) / len(ious),
          "unparsed": sum(parse_box(r["prediction"]) is None for r in records)}
