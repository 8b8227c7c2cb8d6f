"""Evaluation metrics on fixture predictions, against hand-checked values (no model)."""
import math

import numpy as np
import pytest

from sphinx_jax.eval import choice, cider, ptb, rec, vqa, yesno


@pytest.mark.parametrize("text, expected", [
    ("Two", "2"), ("the two dogs", "2 dogs"), ("an apple", "apple"), ("none", "0"),  # numbers,
    ("Ten", "10"), ("eleven", "eleven"),                                            # articles
    ("dont", "don't"), ("isnt it", "isn't it"), ("Im", "im"),                        # contractions
    ("somebody'd", "somebodyd"),                        # the official table's own reversed entry
    ("yes!", "yes"), ("hot-dog", "hot dog"), ("hot - dog", "hot dog"),              # punctuation
    ("red,blue", "red blue"), ("1,000", "1000"), ("1, 2", "1 2"),
    ("(the) cat", "cat"), ("a/b", "b"),        # '/' becomes a space, then 'a' is an article
    ("3.5", "3.5"), ("end.", "end"), ("mr. smith", "mr smith"), ("e.g.", "eg"),     # periods
    ("YES", "yes"), ("  left  side ", "left side"),
])
def test_vqa_normalisation(text, expected):
  assert vqa.normalize(text) == expected


def test_vqa_normalisation_strips_at_most_32_periods():
  # the official script passes re.UNICODE (32) as re.sub's count
  assert vqa.normalize("." * 40 + "x") == "........x"


def test_vqa_accuracy_averages_leave_one_out_subsets():
  def answers(k):
    return ["red"] * k + ["blue"] * (10 - k)
  # k humans said "red": each of the 10 subsets of 9 holds k or k-1 of them.
  assert vqa.vqa_accuracy("red", answers(1)) == pytest.approx(9 * (1 / 3) / 10)          # 0.3
  assert vqa.vqa_accuracy("red", answers(2)) == pytest.approx((2 / 3 + 8 * 2 / 3) / 10)  # 0.6
  assert vqa.vqa_accuracy("red", answers(3)) == pytest.approx((3 * 2 / 3 + 7) / 10)      # 0.9
  assert vqa.vqa_accuracy("red", answers(4)) == 1.0
  assert vqa.vqa_accuracy("green", answers(4)) == 0.0
  # disagreeing humans: answers and prediction are normalised
  assert vqa.vqa_accuracy("a Dog", ["dog", "Dog", "the dog", "A dog."] + ["cat"] * 6) == 1.0
  assert vqa.vqa_accuracy("Two.", ["2"] * 9 + ["3"]) == 1.0


@pytest.mark.parametrize("prediction, answers, official, accessory, m4c", [
    # unanimous humans: the official script compares as written (after strip)
    ("t-shirt", ["t-shirt"] * 10, 1.0, 0.0, 1.0),
    ("a lot", ["a lot"] * 10, 1.0, 0.0, 1.0),
    ("coca-cola", ["coca-cola"] * 10, 1.0, 0.0, 1.0),
    ("Two.", ["2"] * 10, 0.0, 1.0, 1.0),
    ("Yes", ["yes"] * 10, 0.0, 1.0, 1.0),
    ("Unanswerable", ["unanswerable"] * 10, 0.0, 1.0, 1.0),
    (" yes\n", ["yes"] * 10, 1.0, 1.0, 1.0),
    # Accessory's copy normalises disagreeing answers for punctuation only
    ("2", ["two"] * 5 + ["2"] * 5, 1.0, 1.0, 1.0),
    ("2", ["two"] * 8 + ["three"] * 2, 1.0, 0.0, 1.0),
    # M4C drops ',' and '?' before the punctuation rule
    ("red,blue", ["redblue"] * 9 + ["red"], 0.0, 0.0, 1.0),
])
def test_the_three_vqa_scorers(prediction, answers, official, accessory, m4c):
  assert vqa.vqa_accuracy(prediction, answers) == official
  assert vqa.vqa_accuracy_accessory(prediction, answers) == accessory
  assert vqa.textvqa_accuracy(prediction, answers) == m4c


def test_vqa_summary_per_answer_type_and_exact_match():
  records = [{"prediction": "red", "reference": ["red"] * 10, "answer_type": "other"},
             {"prediction": "no", "reference": ["yes"] * 10, "answer_type": "yes/no"},
             {"prediction": "2", "reference": None}]
  summary = vqa.summarize(records, vqa.vqa_accuracy)
  assert summary == {"scored": 2, "accuracy": 50.0,
                     "per_answer_type": {"other": 100.0, "yes/no": 0.0}}
  assert vqa.exact_match("Cat.", "cat") == 1.0 and vqa.exact_match(" U.S.A ", "usa") == 1.0
  assert vqa.exact_match("cats", "cat") == 0.0


OPTIONS = {"A": "dog", "B": "cat", "C": "bird", "D": "fish"}


@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("B. cat", "B"), ("(C)", "C"), ("C)", "C"), ("The answer is D.", "D"),
    ("I think it is C", "C"), ("A", "A"),
    ("A cat sits on the mat", "B"),      # 'A' is an article here: matched by the option's text
    ("fish", "D"), ("none of them", None), ("E", None), ("B or C", None),
])
def test_letter_extraction(text, expected):
  assert choice.extract_letter(text, OPTIONS) == expected


@pytest.mark.parametrize("text, expected", [
    ("The correct option is A.", "A"),  # the article rejection is VLMEvalKit's VERBOSE mode only
    ("A because the picture shows a dog near the tree", None),  # a letter outside the last 5 words
    ("I pick C", "C"), ("Z", "Z"), ("Cannot determine the answer", "Z"),
    ("The correct answer is **b**", "B"), ("a cat", "B"), ("B or C", None),
])
def test_mmbench_letters_as_vlmevalkit(text, expected):
  assert choice.can_infer(text, OPTIONS) == expected


def test_rotation_and_circular_scoring():
  options, letter = choice.rotate(["a", "b", "c", "d"], 2, 1)  # answer 'c', shifted left once
  assert options == {"A": "b", "B": "c", "C": "d", "D": "a"} and letter == "B"
  assert choice.rotate(["yes", "no"], 1, 1) == ({"A": "no", "B": "yes"}, "A")

  def record(group, shift, answer, said, category="x"):
    return {"group": group, "shift": shift, "reference": answer, "prediction": said,
            "options": OPTIONS, "category": category}
  records = [record(1, s, "ABCD"[s], "ABCD"[s]) for s in range(4)]       # all 4 shifts right
  records += [record(2, s, "B", "B" if s != 3 else "A", "y") for s in range(4)]  # one wrong
  records += [record(3, 0, "C", "C", "y"), record(3, 1, "D", "no idea", "y")]    # unparsed
  out = choice.circular(records)
  assert out["questions"] == 3
  assert out["circular_accuracy"] == pytest.approx(100 / 3)
  assert out["single_pass_accuracy"] == 100.0  # every shift-0 answer is right
  assert out["per_category"] == {"x": 100.0, "y": 0.0}
  plain = choice.accuracy(records, by="category")
  assert plain["accuracy"] == pytest.approx(100 * 8 / 10) and plain["unparsed"] == 1


def test_pope_parsing_and_metrics():
  texts = ["Yes, there is a cat.", "No.", "There is not a cat.", "I don't know", "Nope"]
  assert [yesno.pope_label(t) for t in texts] == ["yes", "no", "no", "yes", "yes"]
  labels = ["yes", "no", "no", "yes", "no"]
  # TP 2 (0, 3), FP 1 (4), TN 2 (1, 2), FN 0
  out = yesno.pope_metrics([yesno.pope_label(t) for t in texts], labels)
  assert out == pytest.approx({"samples": 5, "accuracy": 80.0, "precision": 200 / 3,
                               "recall": 100.0, "f1": 80.0, "yes_ratio": 60.0})
  records = [{"prediction": t, "reference": y, "category": "random" if i < 3 else "popular"}
             for i, (t, y) in enumerate(zip(texts, labels))]
  summary = yesno.pope(records)
  assert set(summary) == {"random", "popular", "all"} and summary["all"]["f1"] == 80.0
  assert summary["random"]["accuracy"] == 100.0


def test_mme_acc_plus_and_totals():
  assert [yesno.mme_label(t) for t in ["Yes", "no", "Yes, it is.", "Not sure", "maybe"]] == \
      ["yes", "no", "yes", "no", "other"]

  def record(task, image, said, truth):
    return {"subtask": task, "image": image, "prediction": said, "reference": truth}
  records = [record("artwork", "a1", "Yes", "Yes"), record("artwork", "a1", "No", "No"),
             record("artwork", "a2", "Yes", "Yes"), record("artwork", "a2", "Yes", "No"),
             record("count", "c1", "maybe", "Yes"), record("count", "c1", "No", "No"),
             record("code_reasoning", "p1", "no", "No"), record("code_reasoning", "p1", "yes",
                                                                "Yes")]
  out = yesno.mme(records)
  # artwork: 3/4 questions, 1/2 images with both right -> 75 + 50; count: 1/2 and 0/1
  assert out["subtasks"]["artwork"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}
  assert out["subtasks"]["count"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
  assert out["perception"] == 175.0 and out["cognition"] == 200.0 and out["total"] == 375.0
  with pytest.raises(ValueError, match="not MME's"):
    yesno.mme([record("nonsense", "x", "yes", "Yes")])


def test_rec_boxes_from_the_padded_square():
  # 200 x 100 image: the square is 200 x 200 with 50 rows of padding above
  box = [20.0, 10.0, 100.0, 70.0]
  assert rec.iou("<p>dog</p>[0.10,0.30,0.50,0.60]", box, 200, 100) == pytest.approx(1.0)
  assert rec.iou("[0.20, 0.30, 0.60, 0.60]", box, 200, 100) == pytest.approx(0.6)  # 3600/6000
  assert rec.iou("[0.30,0.30,0.70,0.60]", box, 200, 100) == pytest.approx(1 / 3)   # 2400/7200
  assert rec.iou("[0, 0.3, 1, 0.6] and [0.1,0.3,0.5,0.6]", box, 200, 100) == pytest.approx(0.4)
  assert rec.parse_box("no box here") is None and rec.iou("no box", box, 200, 100) == 0.0
  # portrait 100 x 201: 50 columns of padding on the left ((201 - 100) // 2)
  assert rec.iou("[0.30,0.10,0.70,0.90]", [10.3, 20.1, 90.7, 180.9], 100, 201) == \
      pytest.approx(1.0)
  records = [{"prediction": p, "reference": box, "width": 200, "height": 100} for p in
             ["[0.10,0.30,0.50,0.60]", "[0.20,0.30,0.60,0.60]", "[0.30,0.30,0.70,0.60]", "x"]]
  out = rec.accuracy(records)
  assert out["acc@0.5"] == 50.0 and out["unparsed"] == 1


def test_ptb_tokenisation_as_the_java_tokenizer():
  # the Java PTBTokenizer's output on these lines, tokenised in one call (pycocoevalcap's way):
  # abbreviations keep their period, times and thousands stay whole, brackets are named,
  # assimilations split; the trailing context crosses lines ("x." keeps its period at the end)
  lines = ["A  B", "Mr. Smith's U.S. flag at 2:30 a.m.",
           "About 1,000 (or 2,000) people [sic] {x}.", "He cannot go, he's gonna stay.",
           "It is x.", "A dog in the U.S. The end.", "A man... standing -- alone\u2014here."]
  assert ptb.tokenize(lines) == [
      "a b", "mr. smith 's u.s. flag at 2:30 a.m.",
      "about 1,000 -lrb- or 2,000 -rrb- people -lsb- sic -rsb- -lcb- x -rcb-",
      "he can not go he 's gon na stay", "it is x", "a dog in the u.s. the end",
      "a man standing alone here"]
  assert ptb.tokenize(["It is x."]) == ["it is x."]


def test_cider_hand_checked():
  # idf of every n-gram here is ln 2 (2 images; df 1, or 0 for unseen n-grams: max(1, df)).
  # image 1: candidate = its only reference -> cosine 1 for n = 1, 2, empty n = 3, 4:
  #          10 * mean(1, 1, 0, 0) = 5.
  # image 2: "c e" vs "c d": n = 1 -> (ln2^2) / (sqrt2 ln2)^2 = 1/2, n = 2 -> 0: 10 * 0.5/4.
  scores = cider.cider_d(["a b", "c e"], [["a b"], ["c d"]])
  assert scores == pytest.approx([5.0, 1.25])
  records = [{"prediction": "A  B", "reference": ["a b"]},
             {"prediction": "c, e", "reference": ["c d"]}]
  assert cider.coco_cider(records) == {"scored": 2, "cider": pytest.approx(312.5)}


def _cider_dense(cands: list[str], refs: list[list[str]]) -> float:
  """CIDEr-D straight from the formula, dense vectors per n-gram order (independent of
  `cider.cider_d`): w = tf * (ln N - ln max(1, df)), clipped cosine, Gaussian length penalty on
  the number of bigrams (pycocoevalcap's 'length'), mean over n, mean over refs, x10."""
  def grams(words, n):
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  total = 0.0
  for cand, rs in zip(cands, refs):
    score = 0.0
    for ref in rs:
      cw, rw = cand.split(), ref.split()
      penalty = math.exp(-((max(len(cw) - 1, 0) - max(len(rw) - 1, 0)) ** 2) / 72)
      for n in range(1, 5):
        vocab = sorted(set(grams(cw, n)) | set(grams(rw, n)))
        if not vocab:
          continue
        df = np.array([sum(any(g in grams(r.split(), n) for r in rr) for rr in refs)
                       for g in vocab], float)
        idf = math.log(len(cands)) - np.log(np.maximum(df, 1.0))
        c = np.array([grams(cw, n).count(g) for g in vocab]) * idf
        r = np.array([grams(rw, n).count(g) for g in vocab]) * idf
        dot = float(np.sum(np.minimum(c, r) * r))
        norms = np.linalg.norm(c) * np.linalg.norm(r)
        score += (dot / norms if norms else dot) * penalty / 4
    total += 10 * score / len(rs)
  return total / len(cands)


def test_cider_on_five_images_matches_the_formula():
  records = [
      {"prediction": "A man riding a wave on a surfboard.",
       "reference": ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave.",
                     "Man on a surfboard in the ocean."]},
      {"prediction": "Two dogs playing in the grass.",
       "reference": ["Two dogs play on the grass.", "A pair of dogs running in a field.",
                     "Dogs playing in green grass."]},
      {"prediction": "A plate of food.",
       "reference": ["A plate topped with meat and vegetables.", "A white plate of food.",
                     "Dinner on a plate with a fork."]},
      {"prediction": "A red bus on the street.",
       "reference": ["A red double decker bus driving down a street.",
                     "A bus parked on the side of the road.", "Red bus in a city street."]},
      {"prediction": "A cat sleeping on a couch.",
       "reference": ["A cat curled up asleep on a sofa.", "A grey cat sleeping on a couch.",
                     "The cat is napping on the couch."]},
  ]
  cands = ptb.tokenize([r["prediction"] for r in records])
  refs = [ptb.tokenize(r["reference"]) for r in records]  # the same here as in one call
  expected = _cider_dense(cands, refs)
  assert cider.coco_cider(records)["cider"] == pytest.approx(100 * expected, rel=1e-12)
  assert 0 < expected < 10


def test_detection_f1_by_hand():
  from sphinx_jax.eval import detection
  objects = [{"label": "red circle", "box": [0, 8, 16, 24]},    # square [0, .2, .2, .4]
             {"label": "blue square", "box": [40, 32, 66, 58]}]
  # 80 x 64 image: the padded square is 80, rows shifted by 8.
  exact = "<p>red circle</p>[0.00,0.20,0.20,0.40] <p>blue square</p>[0.50,0.50,0.82,0.82]"
  wrong_label = "<p>blue circle</p>[0.00,0.20,0.20,0.40]"
  twice = "<p>red circle</p>[0.00,0.20,0.20,0.40;0.00,0.20,0.20,0.40]"
  records = [{"prediction": p, "reference": objects, "width": 80, "height": 64}
             for p in (exact, wrong_label, twice)]
  assert detection.matches(exact, objects, 80, 64) == (2, 2)
  assert detection.matches(wrong_label, objects, 80, 64) == (0, 1)
  assert detection.matches(twice, objects, 80, 64) == (1, 2)  # a box matches one object once
  summary = detection.f1(records)
  precision, recall = 3 / 5, 3 / 6
  assert summary["precision"] == pytest.approx(100 * precision)
  assert summary["recall"] == pytest.approx(100 * recall)
  assert summary["f1@0.5"] == pytest.approx(100 * 2 * precision * recall / (precision + recall))


def test_probe_answers_from_presence_scores():
  from sphinx_jax.recipe.probe import answer
  z = -np.ones((4, 3))  # colours red green blue yellow x shapes circle square triangle
  z[0, 0] = z[2, 1] = z[2, 0] = 2.0  # a red circle, a blue square, a blue circle
  z[2, 0] = 1.0
  assert answer(z, "What colour is the circle?", "colour") == "red"
  assert answer(z, "What shape is the blue object?", "shape") == "square"
  assert answer(z, "How many circles are there?", "count") == "2"
  assert answer(z, "Is there a green circle?", "yesno") == "no"
  assert answer(z, "Is there a blue square?", "yesno") == "yes"
  with pytest.raises(ValueError, match="not a synthetic colour question"):
    answer(z, "Why?", "colour")


def test_image_swap_changes_are_counted_by_question():
  from sphinx_jax.recipe.report import changed
  asked = [{"id": "0", "prediction": "red"}, {"id": "1", "prediction": "two"},
           {"id": "2", "prediction": "yes"}]
  swapped = [{"id": "0", "prediction": "blue"}, {"id": "1", "prediction": "two"}]
  assert changed(asked, swapped) == 0.5
