"""Multiple choice (ScienceQA, SEED-Bench, MMBench): option letters from free text, accuracy, and
MMBench's circular evaluation.

MMBench is scored as VLMEvalKit scores it without a judge model (its `exact_matching` policy:
`can_infer` of vlmeval/utils/matching_util.py at e8e78f05f308, last changed in 2cf2a36c6e79):
1. `can_infer_option`: '.()[],:;!*#{}' become spaces and the answer is split into words; if exactly
   one option letter is among the words and its first occurrence is among the last 5 words, that
   letter ("The correct option is A." is A: the rejection of 'A' as an article applies only in
   VLMEvalKit's VERBOSE mode); with no option letter but a word 'Z', 'Z' (no answer); a refusal
   from its list is 'Z'; else "(correct) answer is X" (any case, X in A-D);
2. `can_infer_text`: unless the answer is longer than twice the options' total length, exactly one
   option's text appears in it (case ignored).
An answer neither reads is wrong ('Z' there, None here; VLMEvalKit would then ask its judge model,
LLaMA2-Accessory would draw a random letter). ScienceQA and SEED first take a letter the whole
answer is or starts with ("B. cat", "(B)", "C)") and "answer is X" (LLaVA's ScienceQA rule), then
the same `can_infer`.
"""
from __future__ import annotations

import re
from collections import defaultdict

LETTERS = "ABCDEFGHIJ"
_LEADING = re.compile(r"^\(?([A-J])\)?(?:$|[.):])")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\b")
_BLANKED = "".maketrans({c: " " for c in ".()[],:;!*#{}"})
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")


def can_infer_option(answer: str, options: dict[str, str]) -> str | None:
  """VLMEvalKit's `can_infer_option` (VERBOSE unset): a letter, 'Z' for no answer, or None."""
  if "Failed to obtain answer via API" in answer:
    return None
  if any(refusal in answer for refusal in _REFUSALS):
    return "Z"
  words = answer.translate(_BLANKED).split()
  found = [c for c in options if c in words]
  if len(found) == 1 and words.index(found[0]) > len(words) - 5:
    return found[0]
  if not found and "Z" in words:
    return "Z"
  m = _VERBOSE_ANSWER.search(answer)
  if m and m.group(1).upper() in options:
    return m.group(1).upper()
  return None


def can_infer_text(answer: str, options: dict[str, str]) -> str | None:
  """VLMEvalKit's `can_infer_text`: the one option whose text the answer contains."""
  answer = answer.lower()
  if len(answer) > 2 * sum(len(str(v)) for v in options.values()):
    return None
  found = [c for c, text in options.items() if str(text).lower() in answer]
  return found[0] if len(found) == 1 else None


def can_infer(answer: str, options: dict[str, str]) -> str | None:
  """VLMEvalKit's `can_infer`: the option letter, 'Z' (no answer) or None (unreadable)."""
  answer = str(answer)
  return can_infer_option(answer, options) or can_infer_text(answer, options)


def extract_letter(text: str, options: dict[str, str]) -> str | None:
  """The option letter an answer picks, or None (ScienceQA, SEED): the leading letter and
  "answer is X" rules, then `can_infer`."""
  text = text.strip()
  for pattern in (_LEADING, _ANSWER_IS):
    m = pattern.search(text)
    if m and m.group(1) in options:
      return m.group(1)
  letter = can_infer(text, options)
  return None if letter == "Z" else letter


def format_options(options: dict[str, str]) -> str:
  """'A. first\\nB. second', the layout of every multiple-choice prompt here."""
  return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def rotate(options: list[str], answer: int | None, shift: int) -> tuple[dict[str, str], str | None]:
  """Options moved `shift` places left (MMBench's circular shifts) and the answer's new letter."""
  n = len(options)
  moved = options[shift:] + options[:shift]
  letter = None if answer is None else LETTERS[(answer - shift) % n]
  return dict(zip(LETTERS, moved)), letter


def _correct(record: dict, extract=extract_letter) -> bool:
  return extract(record["prediction"], record["options"]) == record["reference"]


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
    groups[r["group"]].append(_correct(r, can_infer))
    category[r["group"]] = str(r.get("category"))
  passed = {g: all(v) for g, v in groups.items()}
  per_category = defaultdict(list)
  for g, ok in passed.items():
    per_category[category[g]].append(ok)
  first = [_correct(r, can_infer) for r in scored if r.get("shift", 0) == 0]
  return {"scored": len(scored), "questions": len(groups),
          "circular_accuracy": 100 * sum(passed.values()) / len(passed),
          "single_pass_accuracy": 100 * sum(first) / len(first) if first else None,
          "per_category": {k: 100 * sum(v) / len(v) for k, v in sorted(per_category.items())}}
