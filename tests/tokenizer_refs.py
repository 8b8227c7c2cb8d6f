"""A tiny SentencePiece model for tests (sentencepiece only: no torch import)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import sentencepiece as spm


def train_tokenizer(path: Path, vocab_size: int = 200, **options) -> Path:
  """A tiny LLaMA-style SentencePiece model (unk 0, bos 1, eos 2), trained on made-up text;
  `options` go to the trainer (e.g. LLaMA's byte_fallback and identity normalisation)."""
  words = ["red", "green", "blue", "circle", "square", "triangle", "the", "a", "is", "of", "in",
           "image", "what", "color", "shape", "left", "right", "top", "bottom", "Human",
           "Assistant", "###", "chat", "between", "curious", "answer", "question", "how", "many"]
  rng = np.random.default_rng(0)
  lines = [" ".join(rng.choice(words, size=12)) for _ in range(2000)]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_prefix=str(path / "tokenizer"), vocab_size=vocab_size,
      model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
      minloglevel=2, **options)
  return path / "tokenizer.model"
