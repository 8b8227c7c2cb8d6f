"""Multiple choice (ScienceQA, SEED-Bench, MMBench): option letters from free text, accuracy, and
MMBench's circular evaluation.

Letter extraction is deterministic, with no LLM fallback (MMBench's grader can ask ChatGPT; an
answer we cannot read counts as wrong, where LLaMA2-Accessory would draw a random letter):
1. the whole answer is a letter, or starts with one followed by '.', ')' or ':' ("B. cat", "(B)");
2. "answer is X" (LLaVA's ScienceQA rule);
3. VLMEvalKit's `can_infer_option`: exactly one option letter appears as a word once punctuation is
   blanked, unless 'A' is among the words of an answer longer than 3 words (an article);
4. VLMEvalKit's `can_infer_text`: exactly one option's text appears in the answer (case ignored).
"""
from __future__ import annotations

import re
from collections import defaultdict

LETTERS = "ABCDEFGHIJ"
_LEADING = re.compile(r"^\(?([A-J])\)?(?:$|[.):])")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\b")
_BLANKED = re.compile(r"[.()\[\],:;!*#{}]")


def extract_letter(text: str, options: dict[str, str]) -> str | None:
  """The option letter an answer picks, or None; `options` maps letters to option texts."""
  text = text.strip()
  for pattern in (_LEADING, _ANSWER_IS):
    m = pattern.search(text)
    if m and m.group(1) in options:
      return m.group(1)
  words = _BLANKED.sub(" ", text).split()
  found = [c for c in options if c in words]
  if len(found) == 1 and not ("A" in words and len(words) > 3):
    return found[0]
  lower = text.lower()
  found = [c for c, option in options.items() if str(option).strip() and
           str(option).lower() in lower]
  return found[0] if len(found) == 1 else None


def format_options(options: dict[str, str]) -> str:
  """'A. first\\nB. second', the layout of every multiple-choice prompt here."""
  return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def rotate(options: list[str], answer: int | None, shift: int) -> tuple[dict[str, str], str | None]:
  """Options moved `shift` places left (MMBench's circular shifts) and the answer's new letter."""
  n = len(options)
  moved = options[shift:] + options[:shift]
  letter = None if answer is None else LETTERS[(answer - shift) % n]
  return dict(zip(LETTERS, moved)), letter


def _correct(record: dict) -> bool:
  return extract_letter(record["prediction"], record["options"]) == record["reference"]


def accuracy(records: list[dict], by: str | None = None) -> dict:
  """{'accuracy', 'unparsed', 'per_<by>'} in percent, over records with a reference letter."""
  scored = [r for r in records if r.get("reference") is not None]
  if not scored:
    return {"scored": 0, "note": "no references (a test split): submit predictions.jsonl"}
  hits = [_correct(r) for r in scored]
  out = {"scored": len(scored), "accuracy": 100 * sum(hits) / len(hits),
         "unparsed": sum(extract_letter(r["prediction"], r["options"]) is None for r in scored)}
  if by:
    groups = defaultdict(list)
    for r, hit in zip(scored, hits):
      groups[str(r.get(by))].append(hit)
    out[f"per_{by}"] = {k: 100 * sum(v) / len(v) for k, v in sorted(groups.items())}
  return out


def circular(records: list[dict]) -> dict:
  """MMBench: a question counts only if every circular shift of its options is answered right
  (records of one question share `group`); also the single-pass accuracy on shift 0."""
  scored = [r for r in records if r.get("reference") is not None]
  if not scored:
    return {"scored": 0, "note": "no references (a test split): submit predictions.jsonl"}
  groups, category = defaultdict(list), {}
  for r in scored:
    groups[r["group"]].append(_correct(r))
    category[r["group"]] = str(r.get("category"))
  passed = {g: all(v) for g, v in groups.items()}
  per_category = defaultdict(list)
  for g, ok in passed.items():
    per_category[category[g]].append(ok)
  first = [_correct(r) for r in scored if r.get("shift", 0) == 0]
  return {"scored": len(scored), "questions": len(groups),
          "circular_accuracy": 100 * sum(passed.values()) / len(passed),
          "single_pass_accuracy": 100 * sum(first) / len(first) if first else None,
          "per_category": {k: 100 * sum(v) / len(v) for k, v in sorted(per_category.items())}}
