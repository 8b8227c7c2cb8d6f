"""Detection F1 at IoU 0.5 (the synthetic world's "Detect all objects shown in the image.").

An answer lists `<p>label</p>[box;box]` groups (grounding.parse); each predicted box is matched
greedily, highest IoU first, to an unmatched reference object of the same label with IoU >= 0.5
(boxes in pixels of the image, mapped from the padded square as REC does). F1 is over every
image pooled (micro): precision = matched / predicted, recall = matched / references.
"""
from __future__ import annotations

from sphinx_jax.eval.rec import box_iou
from sphinx_jax.inference import grounding

THRESHOLD = 0.5


def matches(prediction: str, objects: list[dict], width: int, height: int) -> tuple[int, int]:
  """(matched, predicted) boxes of one answer against its reference `objects` [{label, box}]."""
  predicted = [(g.phrase.strip() if g.phrase else "", grounding.to_image(c, width, height))
               for g in grounding.parse(prediction) for c in g.coords if len(c) == 4]
  pairs = sorted(((box_iou(box, o["box"]), i, j) for i, (label, box) in enumerate(predicted)
                  for j, o in enumerate(objects) if label == o["label"]), reverse=True)
  used_p, used_o = set(), set()
  for score, i, j in pairs:
    if score >= THRESHOLD and i not in used_p and j not in used_o:
      used_p.add(i)
      used_o.add(j)
  return len(used_p), len(predicted)


def f1(records: list[dict]) -> dict:
  matched = predicted = references = 0
  for r in records:
    m, p = matches(r["prediction"], r["reference"], r["width"], r["height"])
    matched, predicted, references = matched + m, predicted + p, references + len(r["reference"])
  precision = matched / predicted if predicted else 0.0
  recall = matched / references if references else 0.0
  score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"samples": len(records), "f1@0.5": 100 * score, "precision": 100 * precision,
          "recall": 100 * recall}
