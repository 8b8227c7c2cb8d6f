"""Golden samples: prompt strings and label masks written out by hand.

`render` shows what the model sees: `<s>`/`</s>`, one `<image>` per K-slot block, and the
supervised tokens inside ⟦ ⟧ (token granularity, so the space a span starts with is visible).
"""
import numpy as np
import pytest

from sphinx_jax.data import display, mimic_it, sources, tasks, templates
from sphinx_jax.data.example import IMAGE
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.sample import Layout, make_sample
from sphinx_jax.data.tokenizer import Tokenizer
from tests import data_fixtures as fx

SYS = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
       "gives helpful, detailed, and polite answers to the human's questions.")
LAYOUT = Layout(VIEW_PLANS["sphinx"], fx.K, seq_len=512, max_images=16)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return Tokenizer(fx.tokenizer(tmp_path_factory.mktemp("tok")))


def shown(sample, tok):
  return display.render(sample.tokens, sample.image_mask, sample.loss_mask, tok, fx.K)


def colours(sample):
  return [fx.image_colour(v) for v in sample.images["vit"]]


def image_blocks(n, text_after):
  """BOS, then n image blocks, then text: the expected image_mask of a sample with leading media."""
  return np.array([False] + [True] * fx.K * n + [False] * text_after)


def test_template_strings():
  assert templates.conversation_prompt([("q1", "a1"), ("q2", None)]) == (
      SYS + "\n\n### Human: q1\n### Assistant: a1\n### Human: q2\n### Assistant:")
  assert templates.conversation([("q", "a")])[1] == ["a\n###"]
  assert templates.STOP == "\n###"


def test_two_turn_conversation(tmp_path, tok):
  (tmp_path / "a.png").write_bytes(fx.png((200, 10, 10)))
  record = {"image": "a.png", "conversations": [
      {"from": "human", "value": "<image>\nWhat color is the circle?"},
      {"from": "gpt", "value": "Red."},
      {"from": "human", "value": "What shape is it?"},
      {"from": "gpt", "value": "A circle."}]}
  source = sources.Conversations(str(fx.write_jsonl(tmp_path / "c.jsonl", [record])),
                                 str(tmp_path)).open()
  example = source[0]
  assert example.prompt == (IMAGE + SYS + "\n\n### Human: What color is the circle?\n###"
                            " Assistant: Red.\n### Human: What shape is it?\n### Assistant:"
                            " A circle.\n###")
  sample = make_sample(example, tok, LAYOUT, 0)
  assert shown(sample, tok) == (
      "<s><image> " + SYS + "\n\n### Human: What color is the circle?\n"
      "### Assistant:⟦ Red.\n###⟧"
      " Human: What shape is it?\n### Assistant:⟦ A circle.\n###⟧</s>")
  n = len(sample.tokens)
  np.testing.assert_array_equal(sample.image_mask, image_blocks(1, n - 1 - fx.K))
  assert not sample.loss_mask[0] and not sample.loss_mask[-1]  # BOS and EOS unsupervised
  assert sample.tokens[-1] == tok.eos_id and sample.tokens[0] == tok.bos_id
  assert colours(sample) == [(200, 10, 10)]


def test_rec_box_normalised_to_the_padded_square(tmp_path, tok):
  (tmp_path / "a.png").write_bytes(fx.png((10, 200, 10), size=(40, 30)))  # padded: 5 px on top
  record = {"image": "a.png", "phrase": "the green square", "box": [4, 5, 20, 25]}
  source = sources.Task(str(fx.write_jsonl(tmp_path / "r.jsonl", [record])), "rec",
                        str(tmp_path)).open()
  example = source[0]
  question = ("Please provide the bounding box coordinate of the region this sentence describes:"
              " the green square.")
  assert example.prompt == (IMAGE + SYS + f"\n\n### Human: {question}\n### Assistant:"
                            " [0.10,0.25,0.50,0.75]\n###")
  sample = make_sample(example, tok, LAYOUT, 0)
  assert shown(sample, tok) == (f"<s><image> {SYS}\n\n### Human: {question}\n### Assistant:"
                                "⟦ [0.10,0.25,0.50,0.75]\n###⟧</s>")


def test_task_formatters():
  size = (40, 30)  # padded square of 40, image rows start at 5
  assert tasks.box([0, 0, 40, 30], size) == "[0.00,0.12,1.00,0.88]"
  objects = [{"label": "cat", "box": [0, 0, 20, 10]}, {"label": "dog", "box": [20, 0, 40, 30]},
             {"label": "cat", "box": [4, 4, 8, 8]}]
  assert tasks.detection({"objects": objects}, size) == [(
      "Detect all objects shown in the image.",
      "<p>cat</p>[0.00,0.12,0.50,0.38;0.10,0.23,0.20,0.33] <p>dog</p>[0.50,0.12,1.00,0.88]")]
  keypoints = [[20, 10, 2]] + [[0, 0, 0]] * 15 + [[8, 25, 1]]
  assert tasks.pose({"box": [0, 0, 40, 30], "keypoints": keypoints}, size) == [(
      "Detect the key points of the person in the region [0.00,0.12,1.00,0.88].",
      "<p>nose</p>[0.50,0.38] <p>right ankle</p>[0.20,0.75]")]
  caption = {"caption": "A cat and a dog.", "regions": [
      {"phrase": "a dog", "boxes": [[20, 0, 40, 30]]},
      {"phrase": "A cat", "boxes": [[0, 0, 20, 10]]}]}
  assert tasks.grounded_caption(caption, size)[0][1] == (
      "<p>A cat</p>[0.00,0.12,0.50,0.38] and <p>a dog</p>[0.50,0.12,1.00,0.88].")
  assert tasks.multiple_choice({"question": "Colour?", "choices": ["red", "blue"], "answer": 1},
                               size) == [("Colour?\nA. red\nB. blue\nAnswer with the option's "
                                          "letter from the given choices directly.", "B")]
  assert tasks.vqa({"question": "Colour?", "answer": "red"}, size) == [
      ("Colour?\nAnswer the question using a single word or phrase.", "red")]
  assert tasks.classification({"label": "dog"}, size) == [("Classify the image.", "This is a dog")]
  with pytest.raises(ValueError, match="outside"):
    tasks.box([0, 0, 41, 30], size)


def test_mimic_it_three_shot_in_context(tmp_path, tok):
  turns = [(f"LACR_INS_{i}", f"What is in image {i}?", f"A shape {i}.", [f"LACR_IMG_{i}"], [])
           for i in range(4)]
  images = {f"LACR_IMG_{i}": fx.png(fx.gray(i)) for i in range(4)}
  paths = fx.mimic_it(tmp_path, "LACR", turns, images,
                      train_config={"LACR_INS_3": ["LACR_INS_0", "LACR_INS_1", "LACR_INS_2"]})
  source = mimic_it.MimicIt(**paths, kind="in_context").open()
  assert len(source) == 1
  example = source[0]
  body = "".join(f" Human: {IMAGE}What is in image {i}?\n### Assistant: A shape {i}.\n###"
                 for i in range(4))
  assert example.prompt == SYS + "\n\n###" + body
  sample = make_sample(example, tok, LAYOUT, 0)
  assert shown(sample, tok) == f"<s> {SYS}\n\n###" + "".join(
      f" Human:<image> What is in image {i}?\n### Assistant:⟦ A shape {i}.\n###⟧"
      for i in range(4)) + "</s>"
  assert colours(sample) == [fx.gray(i) for i in range(4)]  # the 4 images, in turn order
  assert sample.image_mask.sum() == 4 * fx.K


def test_mimic_it_two_image_difference(tmp_path, tok):
  turns = [("SD_INS_0", "What is the difference?", "A car left.", ["SD_IMG_1", "SD_IMG_2"], [])]
  images = {"SD_IMG_1": fx.png(fx.gray(1)), "SD_IMG_2": fx.png(fx.gray(2))}
  source = mimic_it.MimicIt(**fx.mimic_it(tmp_path, "SD", turns, images, parquet=False)).open()
  example = source[0]
  assert example.prompt == (IMAGE + SYS + "\n\n### Human: What is the difference?\n###"
                            " Assistant: A car left.\n###")
  sample = make_sample(example, tok, LAYOUT, 0)
  assert shown(sample, tok) == (f"<s><image><image> {SYS}\n\n### Human: What is the difference?"
                                "\n### Assistant:⟦ A car left.\n###⟧</s>")
  np.testing.assert_array_equal(sample.image_mask,
                                image_blocks(2, len(sample.tokens) - 1 - 2 * fx.K))
  assert colours(sample) == [fx.gray(1), fx.gray(2)]


def test_mimic_it_sixteen_frame_video(tmp_path, tok):
  frames = [f"DC_IMG_v_{i:04d}" for i in range(20)]
  turns = [("DC_INS_0", "What happens?", "A man jumps.", frames, [])]
  images = {f: fx.png(fx.gray(i)) for i, f in enumerate(frames)}
  source = mimic_it.MimicIt(**fx.mimic_it(tmp_path, "DC", turns, images), kind="video").open()
  sample = make_sample(source[0], tok, LAYOUT, 0)
  assert shown(sample, tok) == ("<s>" + "<image>" * 16 + f" {SYS}\n\n### Human: What happens?\n"
                                "### Assistant:⟦ A man jumps.\n###⟧</s>")
  picked = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 19]  # linspace(0, 19, 16) floored
  np.testing.assert_array_equal(mimic_it.sample_frames(20, 16), picked)
  assert colours(sample) == [fx.gray(i) for i in picked]
  np.testing.assert_array_equal(sample.image_mask,
                                image_blocks(16, len(sample.tokens) - 1 - 16 * fx.K))


@pytest.mark.parametrize("n, k, expected", [(1, 8, [0] * 8), (7, 8, [0, 0, 1, 2, 3, 4, 5, 6]),
                                            (300, 8, [0, 42, 85, 128, 170, 213, 256, 299])])
def test_frame_sampling(n, k, expected):
  np.testing.assert_array_equal(mimic_it.sample_frames(n, k), expected)


def test_text_only(tmp_path, tok):
  corpus = sources.TextCorpus(str(fx.write_jsonl(tmp_path / "t.jsonl",
                                                 [{"content": "Red circles are round."}]))).open()
  sample = make_sample(corpus[0], tok, LAYOUT, 0)
  assert shown(sample, tok) == "<s>⟦ Red circles are round.</s>⟧"  # text and EOS supervised
  np.testing.assert_array_equal(sample.loss_mask, [False] + [True] * (len(sample.tokens) - 1))
  assert not sample.image_mask.any() and sample.images == {}
  turns = [("TXT_INS_0", "Say hi.", "Hi.", [], [])]
  dialog = mimic_it.MimicIt(**fx.mimic_it(tmp_path, "TXT", turns, {}), kind="text").open()
  sample = make_sample(dialog[0], tok, LAYOUT, 0)
  assert shown(sample, tok) == f"<s> {SYS}\n\n### Human: Say hi.\n### Assistant:⟦ Hi.\n###⟧</s>"


def test_caption(tmp_path, tok):
  (tmp_path / "a.png").write_bytes(fx.png((1, 2, 3)))
  (tmp_path / "c.csv").write_text("image,caption\na.png,A tiny dark square.\n")
  sample = make_sample(sources.Captions(str(tmp_path / "c.csv"), str(tmp_path)).open()[0], tok,
                       LAYOUT, 0)
  assert shown(sample, tok) == "<s><image>⟦ A tiny dark square.</s>⟧"
  text = len(sample.tokens) - 1 - fx.K
  np.testing.assert_array_equal(sample.loss_mask, [False] * (1 + fx.K) + [True] * text)
  np.testing.assert_array_equal(sample.image_mask, image_blocks(1, text))
