"""Short-answer VQA scoring: the official VQA answer normalisation and accuracy, exact match.

`normalize` is the official evaluation's processPunctuation + processDigitArticle
(GT-Vision-Lab/VQA vqaEval.py, the code behind the EvalAI VQA server), quirks included: the
punctuation rule looks at the *original* text, the period regex has a broken look-behind (it
strips every '.' not followed by a digit) and is passed `re.UNICODE` as its `count` (32), and
the contraction map's own typos are kept. `vqa_accuracy` averages min(#matching humans / 3, 1)
over the 10 leave-one-annotator-out subsets, as that script does. It normalises the human answers
only when they disagree (the official rule) and always normalises the prediction, as
LLaMA2-Accessory's local evaluation (the LAVIS copy) does and as answers are prepared for the
EvalAI server; otherwise "Yes" would miss a unanimous "yes".
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


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
  """Official VQA accuracy of one prediction against the human answers (10 for VQAv2)."""
  answers = [_clean(a) for a in answers]
  prediction = normalize(_clean(prediction))
  if len(set(answers)) > 1:
    answers = [normalize(a) for a in answers]
  scores = [min(1.0, sum(a == prediction for j, a in enumerate(answers) if j != i) / 3)
            for i in range(len(answers))]
  return sum(scores) / len(scores)


def exact_match(prediction: str, answer: str) -> float:
  """LLaMA2-Accessory's `evaluate_exact_match_accuracy` (its GQA and OCR-VQA metric, also
  Qwen-VL's OCR-VQA one): periods removed, case and outer spaces ignored."""
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
