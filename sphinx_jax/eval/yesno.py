"""Yes/no benchmarks: POPE (accuracy, precision, recall, F1, yes-ratio) and MME (acc, acc+, task
scores, perception and cognition totals), each with its official answer parsing."""
from __future__ import annotations

from collections import defaultdict

from sphinx_jax.util.errors import UserError

# MME's official subtasks (eval_tool/calculation.py), the order of its report.
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")


def pope_label(text: str) -> str:
  """POPE's parsing (RUCAIBox/POPE evaluate.py @ f3ec60433, as LLaVA's eval_pope): keep the
  first sentence, drop commas; 'no' if the words include 'No', 'no' or 'not', else 'yes'."""
  text = text.split(".")[0].replace(",", "")
  words = text.split(" ")
  return "no" if "No" in words or "no" in words or "not" in words else "yes"


def pope_metrics(predicted: list[str], labels: list[str]) -> dict:
  """Binary metrics with 'yes' as the positive class, in percent; 0 where undefined."""
  pairs = list(zip(predicted, labels))
  tp = sum(p == "yes" and y == "yes" for p, y in pairs)
  fp = sum(p == "yes" and y == "no" for p, y in pairs)
  tn = sum(p == "no" and y == "no" for p, y in pairs)
  fn = sum(p == "no" and y == "yes" for p, y in pairs)
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"samples": len(pairs), "accuracy": 100 * (tp + tn) / len(pairs),
          "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1,
          "yes_ratio": 100 * (tp + fp) / len(pairs)}


def pope(records: list[dict]) -> dict:
  """Per POPE split (random / popular / adversarial) and over all records with a label."""
  records = [r for r in records if r.get("reference") is not None]
  if not records:
    return {"scored": 0, "note": "no labels: the coco_pope_*.json files carry them"}
  by_split = defaultdict(list)
  for r in records:
    by_split[r["category"]].append(r)
  def metrics(rs):
    return pope_metrics([pope_label(r["prediction"]) for r in rs],
                        [r["reference"].strip().lower() for r in rs])
  out = {k: metrics(v) for k, v in sorted(by_split.items())}
  out["all"] = metrics(records)
  return out


def mme_label(text: str) -> str:
  """MME's `parse_pred_ans` (its eval_tool/calculation.py, as LLaMA2-Accessory copies it in
  accessory/eval_mm/utils/metric.py @ 3777c43940dd) on the lower-cased answer: 'yes'/'no', or a
  yes/no among its first four characters, else 'other' (always wrong)."""
  text = text.lower()
  if text in ("yes", "no"):
    return text
  return "yes" if "yes" in text[:4] else "no" if "no" in text[:4] else "other"


def mme(records: list[dict]) -> dict:
  """Per subtask: acc (questions right) and acc+ (images whose questions are all right; MME has
  two per image), score = 100 * (acc + acc+); perception / cognition = sums of their subtasks'
  scores over the subtasks present."""
  tasks = defaultdict(lambda: defaultdict(list))
  for r in records:
    right = mme_label(r["prediction"]) == r["reference"].strip().lower()
    tasks[r["subtask"]][r["image"]].append(right)
  out = {}
  for task, images in tasks.items():
    answers = [ok for oks in images.values() for ok in oks]
    acc = sum(answers) / len(answers)
    acc_plus = sum(all(oks) for oks in images.values()) / len(images)
    out[task] = {"acc": 100 * acc, "acc_plus": 100 * acc_plus, "score": 100 * (acc + acc_plus)}
  unknown = sorted(set(out) - set(MME_PERCEPTION) - set(MME_COGNITION))
  if unknown:
    raise UserError(f"MME subtasks {unknown} are not MME's: {MME_PERCEPTION + MME_COGNITION}")
  perception = sum(out[t]["score"] for t in MME_PERCEPTION if t in out)
  cognition = sum(out[t]["score"] for t in MME_COGNITION if t in out)
  return {"perception": perception, "cognition": cognition, "total": perception + cognition,
          "subtasks": {t: out[t] for t in MME_PERCEPTION + MME_COGNITION if t in out}}
