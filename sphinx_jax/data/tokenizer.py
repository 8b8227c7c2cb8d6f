"""SentencePiece tokenizer (LLaMA `tokenizer.model`). The vocabulary is never changed."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import sentencepiece as spm

from sphinx_jax.util.errors import UserError


class Tokenizer:
  def __init__(self, path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"{path}: tokenizer model not found")
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(str(path))
    except (OSError, RuntimeError) as e:
      raise UserError(f"{path}: not a SentencePiece model ({e})") from None
    self.path = path

  @property
  def bos_id(self) -> int:
    return self.sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self.sp.eos_id()

  @property
  def vocab_size(self) -> int:
    return self.sp.vocab_size()

  def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
    ids = self.sp.EncodeAsIds(text)
    return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

  def encode_segment(self, text: str) -> list[int]:
    """Tokens of `text` as they appear after a space inside a longer text (LLaMA2-Accessory's
    `encode_segment`, which the training masks rely on): leading spaces dropped, the model's dummy
    prefix standing for one."""
    text = text.lstrip(" ")
    return self.encode(text if self._dummy_prefix else " " + text, bos=False)

  @functools.cached_property
  def _dummy_prefix(self) -> bool:
    """Whether a word-initial piece already carries its space (LLaMA's sentencepiece does)."""
    tail = self.sp.EncodeAsIds("my darling")
    return self.sp.EncodeAsIds("Hi my darling")[-len(tail):] == tail

  def decode(self, ids: list[int]) -> str:
    """Text of `ids`; ids past the vocabulary (a model's padded embedding rows) are dropped."""
    return self.sp.DecodeIds([int(i) for i in ids if 0 <= i < self.vocab_size])
