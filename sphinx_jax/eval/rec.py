"""Referring expression comprehension (RefCOCO / RefCOCO+ / RefCOCOg): Acc@0.5.

As LLaMA2-Accessory scores it (accessory/eval_mm/evaluate.py at 3777c43940dd, metric 'miou0.5'):
the first `[...]` of the answer (or, with none, the text before the first ']') must hold 4
comma-separated numbers, else the box is (0, 0, 0, 0); the ground truth is shifted into the
padded square by (max_edge - short_edge) // 2 (`box_xyxy_expand2square`), both become float32
tensors, the answer's numbers are multiplied by max_edge, and the IoU is its `box_iou`
(torchvision's formula, no +1) in float32; a hit at IoU >= 0.5. Float32 matters: boxes whose IoU
is exactly 0.5 in real numbers land on either side of it depending on the rounding.
"""
from __future__ import annotations

import re

import numpy as np

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
  """IoU of two (x1, y1, x2, y2) boxes in float32, in the operation order of torchvision's
  `box_iou` (areas may go negative as there); 0 where the union is 0 (NaN there, never a hit)."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  area_a = (a[2] - a[0]) * (a[3] - a[1])
  area_b = (b[2] - b[0]) * (b[3] - b[1])
  wh = np.maximum(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), np.float32(0))
  inter = wh[0] * wh[1]
  union = area_a + area_b - inter
  return float(inter / union) if union else 0.0


def iou(prediction: str, box, width: int, height: int) -> float:
  """IoU of the answer's box (padded-square coordinates) with the pixel box `box`, computed in
  the padded square as the reference does."""
  side = max(width, height)
  dx, dy = (side - width) // 2, (side - height) // 2
  found = np.asarray(parse_box(prediction) or (0.0, 0.0, 0.0, 0.0), np.float32) * np.float32(side)
  return box_iou(found, [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy])


def accuracy(records: list[dict]) -> dict:
  ious = [iou(r["prediction"], r["reference"], r["width"], r["height"]) for r in records]
  return {"samples": len(records), "acc@0.5": 100 * sum(v >= 0.5 for v in ious) / len(ious),
          "mean_iou": 100 * sum(ious) / len(ious),
          "unparsed": sum(parse_box(r["prediction"]) is None for r in records)}
