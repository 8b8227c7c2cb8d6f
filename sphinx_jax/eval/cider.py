"""COCO caption CIDEr (CIDEr-D, as pycocoevalcap computes it), without Java.

pycocoevalcap's `Cider` is CIDEr-D: n-grams 1..4, tf-idf weights with document frequencies
counted over the evaluated images' references (idf = log(#images) - log(max(1, df))), the
candidate's weights clipped at the reference's, cosine per n, a Gaussian length penalty
exp(-delta^2 / (2 * 6^2)), the mean over n, averaged over references, times 10. One quirk is
kept: its "length" counts *bigrams* (its `if n == 1` tests the 0-based n-gram index), so delta is
the difference of bigram counts. Papers print the corpus mean times 100; so does `coco_cider`.

Tokenisation: pycocoevalcap runs Stanford's Java PTBTokenizer (-lowerCase) and drops its
punctuation tokens. `ptb_tokenize` approximates it: lower case, clitics split as PTB does
("don't" -> "do n't", "dog's" -> "dog 's"), words keep inner hyphens, slashes, periods and
apostrophes ("black-and-white", "3.5", "o'clock"), every other mark is its own token and the
marks pycocoevalcap removes (. , ? ! : ; - -- ... quotes, brackets) are dropped. Known
differences: PTB keeps abbreviation periods ("mr." vs our "mr") and square brackets
(as -lsb-/-rsb-), and splits a few more forms (e.g. "cannot"); COCO captions rarely have these.
"""
from __future__ import annotations

import math
import re
from collections import Counter

_NOT = re.compile(r"(\w)n't\b")
_CLITIC = re.compile(r"(\w)'(s|re|ve|ll|d|m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-/.&']\w+)*|\.\.\.|--|\S")
_DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", "(", ")", "{",
            "}", '"'}


def ptb_tokenize(text: str) -> str:
  """Space-joined tokens, approximately pycocoevalcap's PTBTokenizer output."""
  text = _CLITIC.sub(r"\1 '\2", _NOT.sub(r"\1 n't", text.lower().replace("\n", " ")))
  return " ".join(t for t in _TOKEN.findall(text) if t not in _DROPPED)


def _ngrams(words: list[str], n: int) -> Counter:
  return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(candidates: list[str], references: list[list[str]], n: int = 4,
            sigma: float = 6.0) -> list[float]:
  """Per-image CIDEr-D of tokenised candidates against their tokenised references."""
  cands = [_ngrams(c.split(), n) for c in candidates]
  refs = [[_ngrams(r.split(), n) for r in rs] for rs in references]
  df = Counter(g for rs in refs for g in {g for r in rs for g in r})
  log_images = math.log(len(references))

  def vector(counts: Counter):
    vec, norm, bigrams = [{} for _ in range(n)], [0.0] * n, 0
    for gram, tf in counts.items():
      k = len(gram) - 1
      vec[k][gram] = tf * (log_images - math.log(max(1.0, df[gram])))
      norm[k] += vec[k][gram] ** 2
      bigrams += tf if k == 1 else 0
    return vec, [math.sqrt(x) for x in norm], bigrams

  scores = []
  for cand, rs in zip(cands, refs):
    vec, norm, length = vector(cand)
    total = [0.0] * n
    for ref in rs:
      rvec, rnorm, rlength = vector(ref)
      penalty = math.exp(-((length - rlength) ** 2) / (2 * sigma ** 2))
      for k in range(n):
        value = sum(min(w, rvec[k].get(g, 0.0)) * rvec[k].get(g, 0.0) for g, w in vec[k].items())
        if norm[k] and rnorm[k]:
          value /= norm[k] * rnorm[k]
        total[k] += value * penalty
    scores.append(10.0 * sum(total) / n / len(rs))
  return scores


def coco_cider(records: list[dict]) -> dict:
  """{'cider': 100 * corpus CIDEr-D} of records with a prediction and reference captions."""
  scored = [r for r in records if r.get("reference")]
  if len(scored) < 2:
    return {"scored": len(scored), "note": "CIDEr needs at least 2 images (idf over images)"}
  scores = cider_d([ptb_tokenize(r["prediction"]) for r in scored],
                   [[ptb_tokenize(c) for c in r["reference"]] for r in scored])
  return {"scored": len(scored), "cider": 100 * sum(scores) / len(scores)}
