"""Evaluation prompts and their token layout.

The instruction strings are LLaMA2-Accessory's SPHINX evaluation prompts
(accessory/eval_mm/annotations/annotation_config.json and the annotation files it names), the
LLaVA-1.5 ones where Accessory has none (SEED, MMBench), and SPHINX's own task instructions
(its demo lists the captioning one). Every question is asked in the conv_v1_2 template, as
Accessory's `inference_image_sphinx.py` does (conv "v1", identical to v1_2).

Layout (data.sample.prompt, shared with training and chat): one image sits right after BOS
(the reference); several images (in-context demonstrations) each sit at the IMAGE marker
opening their question, tokenised as training does (text between images encoded per stretch,
whitespace next to an image dropped, stretches after an image encoded as segments).
"""
from __future__ import annotations

import numpy as np

from sphinx_jax.data.sample import prompt
from sphinx_jax.data.templates import conversation_prompt
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.eval.samples import Question
from sphinx_jax.util.errors import UserError

# "{}\nAnswer the question using a single word or phrase." -- VQAv2, OK-VQA, GQA, TextVQA,
# OCR-VQA and MME in annotation_config.json (MME's questions already end "Please answer yes or
# no.").
SHORT_ANSWER = "Answer the question using a single word or phrase."
# VizWiz: "{} When the provided information is insufficient, respond with 'Unanswerable'.\n"
# + SHORT_ANSWER (annotation_config.json, vizwiz_val).
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
# SEED-Bench and MMBench: LLaVA-1.5's instruction (Accessory ships no prompt for them).
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
# ScienceQA: Accessory's scienceqa_test_img.json writes the question as
# "Context:\n{hint}\nQuestion:\n{q}\nChoices:\nA. ..\nB. ..\n" + this line (its `option"s`
# typo kept: it is what the reported numbers were produced with), and the answer is started
# with " The answer is" (the config's "output").
SCIENCEQA_CHOICE = 'Answer with the option"s letter from the given choices directly.'
SCIENCEQA_PREFIX = " The answer is"
# RefCOCO/+/g: annotation_config.json's REC prompt.
REC = "Please provide the bounding box coordinate of the region this sentence describes: {}."
# POPE: the yes/no instruction of MME's questions (no Accessory prompt for POPE).
YES_NO = "Please answer yes or no."
# COCO captions (0-shot question and every in-context demonstration): SPHINX's short-caption
# task instruction (accessory/demos/multi_turn_mm_box.py).
CAPTION = "Provide a one-sentence caption for the provided image."
# TextVQA with OCR tokens: LLaVA-1.5's variant, the Rosetta tokens listed before the instruction.
OCR_TOKENS = "Reference OCR token: {}"


def short_answer(question: str) -> str:
  return f"{question}\n{SHORT_ANSWER}"


def vizwiz(question: str) -> str:
  return f"{question} {UNANSWERABLE}\n{SHORT_ANSWER}"


def textvqa_ocr(question: str, tokens: list[str]) -> str:
  return f"{question}\n{OCR_TOKENS.format(', '.join(tokens))}\n{SHORT_ANSWER}"


def multiple_choice(question: str, options: str, hint: str | None = None) -> str:
  """LLaVA-1.5's SEED/MMBench layout: [hint], question, 'A. ..' lines, the instruction."""
  head = f"{hint}\n{question}" if hint else question
  return f"{head}\n{options}\n{MULTIPLE_CHOICE}"


def scienceqa(question: str, options: str, hint: str) -> str:
  return f"Context:\n{hint}\nQuestion:\n{question}\nChoices:\n{options}\n{SCIENCEQA_CHOICE}"


def yes_no(question: str) -> str:
  return f"{question} {YES_NO}"


def text(sample: Question) -> str:
  """The whole prompt text, up to where the model's answer starts."""
  return conversation_prompt([*sample.history, (sample.question, None)]) + sample.answer_prefix


def tokens(tokenizer: Tokenizer, sample: Question,
           tokens_per_image: int) -> tuple[np.ndarray, np.ndarray]:
  """The prompt's tokens (0 at image slots) and image_mask, laid out as training and chat lay
  out theirs (data.sample.prompt)."""
  try:
    return prompt(text(sample), len(sample.images), tokenizer, tokens_per_image)
  except ValueError as e:
    raise UserError(f"sample {sample.id}: {e}") from None
