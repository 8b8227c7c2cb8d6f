"""COCO caption CIDEr (CIDEr-D, as pycocoevalcap computes it), without Java.

pycocoevalcap's `Cider` is CIDEr-D: n-grams 1..4, tf-idf weights with document frequencies
counted over the evaluated images' references (idf = log(#images) - log(max(1, df))), the
candidate's weights clipped at the reference's, cosine per n, a Gaussian length penalty
exp(-delta^2 / (2 * 6^2)), the mean over n, averaged over references, times 10. One quirk is
kept: its "length" counts *bigrams* (its `if n == 1` tests the 0-based n-gram index), so delta is
the difference of bigram counts. Papers print the corpus mean times 100; so does `coco_cider`.
Tokenisation is `ptb.tokenize` (pycocoevalcap's Java PTBTokenizer, ported), called as its
COCOEvalCap does: once over all references in image order, once over all predictions.
`coco_cider_pycocoevalcap` runs pycocoevalcap itself (needs `pip install -r
requirements-eval.txt` and Java); both equal the stored official outputs in the tests.
"""
from __future__ import annotations

import math
import shutil
from collections import Counter

from sphinx_jax.eval import ptb
from sphinx_jax.util.errors import UserError


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


def _scored(records: list[dict]) -> list[dict] | dict:
  scored = [r for r in records if r.get("reference")]
  if len(scored) < 2:
    return {"scored": len(scored), "note": "CIDEr needs at least 2 images (idf over images)"}
  return scored


def coco_cider(records: list[dict]) -> dict:
  """{'cider': 100 * corpus CIDEr-D} of records with a prediction and reference captions."""
  scored = _scored(records)
  if isinstance(scored, dict):
    return scored
  refs = ptb.tokenize([c for r in scored for c in r["reference"]])
  bounds = [0]
  for r in scored:
    bounds.append(bounds[-1] + len(r["reference"]))
  scores = cider_d(ptb.tokenize([r["prediction"] for r in scored]),
                   [refs[a:b] for a, b in zip(bounds, bounds[1:])])
  return {"scored": len(scored), "cider": 100 * sum(scores) / len(scores)}


def coco_cider_pycocoevalcap(records: list[dict]) -> dict:
  """The same through pycocoevalcap itself: its PTBTokenizer (Java) and its `Cider`."""
  try:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
  except ImportError:
    raise UserError("--scorer pycocoevalcap needs `pip install -r requirements-eval.txt`") from None
  if shutil.which("java") is None:
    raise UserError("--scorer pycocoevalcap needs Java on PATH (Debian: default-jre-headless)")
  scored = _scored(records)
  if isinstance(scored, dict):
    return scored
  gts = PTBTokenizer().tokenize({i: [{"caption": c} for c in r["reference"]]
                                 for i, r in enumerate(scored)})
  res = PTBTokenizer().tokenize({i: [{"caption": r["prediction"]}] for i, r in enumerate(scored)})
  score, _ = Cider().compute_score(gts, res)
  return {"scored": len(scored), "cider": 100 * float(score)}
