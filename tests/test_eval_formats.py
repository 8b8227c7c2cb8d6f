"""Benchmark adapters over the fixtures: the exact prompts, references and ids (no model)."""
import json

import pytest

from sphinx_jax.eval.benchmarks import BENCHMARKS
from sphinx_jax.eval.samples import Inline, benchmark_image
from tests.fixtures.eval import formats

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def read(name, tmp_path, **kwargs):
  bench = BENCHMARKS[name]
  return bench.read(formats.write(name, tmp_path / name), bench.split, **kwargs)


def test_short_answer_prompts_and_references(tmp_path):
  vqa = read("vqav2", tmp_path)[0]
  assert (vqa.id, vqa.question) == ("100", "what color is 0?" + SHORT)
  assert vqa.reference == ["red"] * 7 + ["blue"] * 3 and vqa.meta == {"answer_type": "other"}
  assert vqa.images[0].name == "COCO_val2014_000000000001.jpg"
  assert read("vizwiz", tmp_path)[0].question == (
      "what is this? When the provided information is insufficient, respond with "
      "'Unanswerable'." + SHORT)
  assert read("textvqa_ocr", tmp_path)[0].question == (
      "what does it say?\nReference OCR token: STOP, left" + SHORT)
  ocr = read("ocrvqa", tmp_path)
  assert len(ocr) == 10 and (ocr[1].id, ocr[1].reference) == ("1000/1", "No")  # test split only
  assert read("mme", tmp_path)[0].question == (
      "Are there two cats? Please answer yes or no." + SHORT)
  assert read("pope", tmp_path)[0].question == \
      "Is there a cat in the image? Please answer yes or no."


def test_multiple_choice_prompts(tmp_path):
  sqa = read("scienceqa", tmp_path)
  assert len(sqa) == 10  # the train and the image-less problems are left out
  assert sqa[0].question == ('Context:\nLook closely.\nQuestion:\nWhich is a mammal?\nChoices:\n'
                             'A. cat\nB. fish\nAnswer with the option"s letter from the given '
                             'choices directly.')
  assert (sqa[0].reference, sqa[0].answer_prefix) == ("A", " The answer is")
  seed = read("seed", tmp_path)
  assert len(seed) == 10 and seed[0].meta["question_type"] == "Scene Understanding"
  assert seed[0].question == "How many cats?\nA. one\nB. two\nC. three\nD. four" + LETTER
  mmb = read("mmbench", tmp_path)
  assert [s.id for s in mmb] == ["0@0", "0@1", "0@2", "0@3", "1@0", "1@1", "1@2", "1@3", "2@0",
                                 "2@1"]
  assert mmb[5].question == "A sunny day.\nWhich color?\nA. green\nB. blue\nC. white\nD. red" + \
      LETTER
  assert [s.reference for s in mmb[4:]] == ["C", "B", "A", "D", "B", "A"]
  assert isinstance(mmb[0].images[0], Inline) and benchmark_image(mmb[0].images[0]).size == (24, 16)


def test_mmbench_file_with_its_own_circular_copies(tmp_path):
  root = formats.write("mmbench", tmp_path)
  tsv = root / "mmbench_dev_en.tsv"
  lines = tsv.read_text().splitlines()
  first = lines[1].split("\t")
  copy = ["1000000", first[1], first[2], "a dog", "a car", "a cup", "a cat", "D", first[8], "0"]
  tsv.write_text("\n".join(lines[:2] + ["\t".join(copy)]) + "\n")  # image: row 0's
  samples = BENCHMARKS["mmbench"].read(root, None)
  assert [(s.id, s.reference, s.meta["group"], s.meta["shift"]) for s in samples] == [
      ("0", "A", 0, 0), ("1000000", "D", 0, 1)]
  assert samples[1].images[0].data == first[9]


def test_grounding_and_caption_samples(tmp_path):
  ref = read("refcoco", tmp_path)[3]
  assert ref.question == ("Please provide the bounding box coordinate of the region this "
                          "sentence describes: the thing 3.")
  assert (ref.reference, ref.meta) == ([1.0, 2.0, 27.0, 10.5], {"width": 30, "height": 12})
  refer = read("refcocog", tmp_path)  # refs(umd).p + instances.json, the val split
  assert len(refer) == 10 and refer[0].reference == [1.0, 1.0, 13.0, 9.0]
  cap = read("coco_captions", tmp_path)
  assert len(cap) == 10 and cap[0].history == () and len(cap[0].reference) == 3
  assert cap[0].question == "Provide a one-sentence caption for the provided image."


def test_bad_files_are_one_line_errors_naming_them(tmp_path):
  root = formats.write("gqa", tmp_path)
  (root / "testdev_balanced_questions.json").write_text("{not json")
  with pytest.raises(ValueError, match="testdev_balanced_questions.json: not valid JSON"):
    BENCHMARKS["gqa"].read(root, "testdev_balanced")
  (root / "testdev_balanced_questions.json").write_text(json.dumps({"q0": {"imageId": "n0"}}))
  with pytest.raises(ValueError, match=r"\[q0\]: no 'question' field"):
    BENCHMARKS["gqa"].read(root, "testdev_balanced")
  with pytest.raises(FileNotFoundError, match="no file matches 'nosplit_questions.json'"):
    BENCHMARKS["gqa"].read(root, "nosplit")
