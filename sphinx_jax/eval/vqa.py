"""Short-answer VQA scoring: the three VQA-accuracy scorers the field uses, and exact match.

All three average min(#matching humans / 3, 1) over the 10 leave-one-annotator-out subsets and
share the official answer normalisation (processPunctuation + processDigitArticle, quirks kept:
the punctuation rule looks at the *original* text, the period regex has a broken look-behind and
is passed `re.UNICODE` (32) as its `count`, the contraction table's typos stay). They differ in
*what* they normalise:

- `vqa_accuracy`: GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py` at
  a013f0043c1e ("Fixed processing answers bug", 2021-03-11), the EvalAI VQA server's script:
  answers and prediction have '\\n'/'\\t' made spaces and are stripped; "if
  len(set(gtAnswers)) > 1" the answers *and* the prediction are normalised, otherwise none is
  (so `t-shirt` matches ten `t-shirt`s, and `Yes` does not match ten `yes`s).
- `vqa_accuracy_accessory`: the pre-2021 script as LAVIS and LLaMA2-Accessory copy it
  (`accessory/eval_mm/utils/vqa_eval.py` at 3777c43940dd), which produced SPHINX's local val
  numbers: the prediction is always normalised; the answers get processPunctuation only, and only
  when they disagree.
- `textvqa_accuracy`: TextVQA's own EvalAI scorer, M4C's `TextVQAAccuracyEvaluator` with
  `EvalAIAnswerProcessor` (mmf; LLaVA's copy `llava/eval/m4c_evaluator.py` at c121f0432da2):
  every string is lower-cased, loses ',' and '?', has "'s" -> " 's", then is normalised; the
  prediction scores its processed form's soft score among the processed answers.
"""
from __future__ import annotations

import re
from collections import defaultdict

# word -> contraction, exactly the official table (keys that can never match after lower-casing,
# identities and the reversed 'somebody'd' entry are the official script's own).
_CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd
thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've""".split())
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official (broken) look-behind
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!"]


def process_punctuation(text: str) -> str:
  """Drop a mark next to a space (or anywhere, if a comma sits between digits), else make it a
  space; then strip periods not followed by a digit (at most 32: the official `count` slip)."""
  out = text
  digit_comma = _COMMA_STRIP.search(text) is not None
  for p in _PUNCT:
    if p + " " in text or " " + p in text or digit_comma:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out, int(re.UNICODE))


def process_digit_article(text: str) -> str:
  """Lower-case words, number words -> digits, articles dropped, contractions restored."""
  words = [_NUMBERS.get(w, w) for w in text.lower().split()]
  return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize(text: str) -> str:
  return process_digit_article(process_punctuation(text))


def _clean(text: str) -> str:
  return text.replace("\n", " ").replace("\t", " ").strip()


def _soft_score(prediction: str, answers: list[str]) -> float:
  """Mean over leave-one-out subsets of min(#answers equal to `prediction` / 3, 1) (the answers
  are told apart by position, as the official answer dicts are by their distinct answer_id)."""
  scores = [min(1.0, sum(a == prediction for j, a in enumerate(answers) if j != i) / 3)
            for i in range(len(answers))]
  return sum(scores) / len(scores)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
  """GT-Vision-Lab's vqaEval.py (2021): normalise answers and prediction only when the answers
  disagree."""
  answers = [_clean(a) for a in answers]
  prediction = _clean(prediction)
  if len(set(answers)) > 1:
    answers = [normalize(a) for a in answers]
    prediction = normalize(prediction)
  return _soft_score(prediction, answers)


def vqa_accuracy_accessory(prediction: str, answers: list[str]) -> float:
  """LLaMA2-Accessory's (LAVIS's) copy of the pre-2021 script: SPHINX's local val numbers."""
  if len(set(answers)) > 1:
    answers = [process_punctuation(a) for a in answers]
  return _soft_score(normalize(_clean(prediction)), answers)


def _evalai_process(text: str) -> str:
  """M4C's EvalAIAnswerProcessor (its comma regex can never fire: commas are already gone)."""
  text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
  return normalize(_clean(text))


def textvqa_accuracy(prediction: str, answers: list[str]) -> float:
  """TextVQA's EvalAI scorer (M4C's TextVQAAccuracyEvaluator): everything processed."""
  return _soft_score(_evalai_process(prediction), [_evalai_process(a) for a in answers])


def exact_match(prediction: str, answer: str) -> float:
  """LLaMA2-Accessory's `evaluate_exact_match_accuracy` (accessory/eval_mm/utils/metric.py @
  3777c43940dd; its GQA and OCR-VQA metric, also Qwen-VL's OCR-VQA one): periods removed, case
  and outer spaces ignored."""
  def norm(s):
    return s.replace(".", "").strip().lower()
  return float(norm(prediction) == norm(answer))


def summarize(records: list[dict], score) -> dict:
  """{'accuracy': 100 * mean score, 'per_answer_type': ...} over records with a reference;
  `score(prediction, reference)` is `vqa_accuracy` or `exact_match`."""
  scored = [r for r in records if r.get("reference") is not None]
  if not scored:
    return {"scored": 0, "note": "no references (a test split): submit predictions.jsonl"}
  by_type = defaultdict(list)
  values = []
  for r in scored:
    value = score(r["prediction"], r["reference"])
    values.append(value)
    if r.get("answer_type"):
      by_type[r["answer_type"]].append(value)
  out = {"scored": len(scored), "accuracy": 100 * sum(values) / len(values)}
  if by_type:
    out["per_answer_type"] = {k: 100 * sum(v) / len(v) for k, v in sorted(by_type.items())}
  return out
