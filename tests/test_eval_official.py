"""Every metric against its official scorer's outputs, stored in tests/fixtures/eval_official by
running the official code once (its README says how): GT-Vision-Lab's vqaEval.py, LLaMA2-
Accessory's VQA copy and REC code, M4C's TextVQA evaluator, VLMEvalKit's `can_infer`, and
pycocoevalcap's Java PTBTokenizer and CIDEr-D."""
import json
import math
import shutil
from pathlib import Path

import pytest

from sphinx_jax.eval import choice, cider, ptb, rec, vqa
from sphinx_jax.util.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures" / "eval_official"


def _load(name):
  return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize("scorer, score", [("vqa", vqa.vqa_accuracy),
                                           ("accessory", vqa.vqa_accuracy_accessory),
                                           ("m4c", vqa.textvqa_accuracy)])
def test_vqa_accuracy_equals_each_official_scorer(scorer, score):
  data = _load("vqa.json")
  ours = [score(c["prediction"], c["answers"]) for c in data["cases"]]
  assert len(ours) == 805
  assert [i for i, (a, b) in enumerate(zip(ours, data[scorer])) if abs(a - b) > 1e-12] == []


def test_the_vqa_scorers_disagree_on_the_corpus():
  """The corpus tells the three apart: a port of the wrong one fails the test above."""
  data = _load("vqa.json")
  for a, b in (("vqa", "accessory"), ("vqa", "m4c"), ("accessory", "m4c")):
    assert sum(x != y for x, y in zip(data[a], data[b])) >= 30


def test_mmbench_letters_equal_vlmevalkit():
  data = _load("choice.json")
  ours = [choice.can_infer(c["answer"], c["options"]) for c in data["cases"]]
  assert [(c["answer"], o, t) for c, o, t in zip(data["cases"], ours, data["can_infer"])
          if o != (t or None)] == []


def test_rec_iou_equals_the_reference_in_float32():
  data = _load("rec.json")
  ours = [rec.iou(c["prediction"], c["box"], c["width"], c["height"]) for c in data["cases"]]
  assert [i for i, (a, b) in enumerate(zip(ours, data["iou"])) if a != b] == []
  # the corpus holds ties that float64 arithmetic decides the other way
  def iou64(c):
    side = max(c["width"], c["height"])
    dx, dy = (side - c["width"]) // 2, (side - c["height"]) // 2
    p = [v * side for v in (rec.parse_box(c["prediction"]) or (0, 0, 0, 0))]
    g = [c["box"][0] + dx, c["box"][1] + dy, c["box"][2] + dx, c["box"][3] + dy]
    w = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    h = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - w * h
    return w * h / union if union else 0.0
  flipped = sum((iou64(c) >= 0.5) != (t >= 0.5) for c, t in zip(data["cases"], data["iou"]))
  assert flipped >= 10


def test_ptb_tokenizer_equals_the_java_one():
  data = _load("ptb.json")
  ours = ptb.tokenize(data["lines"])
  assert len(ours) == len(data["tokens"]) == 959
  assert [(line, o, t) for line, o, t in zip(data["lines"], ours, data["tokens"]) if o != t] == []


def test_coco_cider_equals_pycocoevalcap():
  data = _load("cider.json")
  assert cider.coco_cider(data["records"])["cider"] == pytest.approx(100 * data["cider"],
                                                                      rel=1e-12)
  assert not math.isclose(data["cider"], 0.0)


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (default-jre-headless)")
def test_the_pycocoevalcap_scorer_runs_the_official_code():
  pytest.importorskip("pycocoevalcap")
  data = _load("cider.json")
  assert cider.coco_cider_pycocoevalcap(data["records"])["cider"] == pytest.approx(
      100 * data["cider"], rel=1e-12)


def test_the_pycocoevalcap_scorer_says_what_it_needs(monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: None)  # no Java (or no pycocoevalcap)
  with pytest.raises(UserError, match="--scorer pycocoevalcap needs"):
    cider.coco_cider_pycocoevalcap(_load("cider.json")["records"])
