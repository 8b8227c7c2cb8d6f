"""SentencePiece tokenizer (LLaMA `tokenizer.model`). The vocabulary is never changed."""
from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm


class Tokenizer:
  def __init__(self, path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"{path}: tokenizer model not found")
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(str(path))
    except (OSError, RuntimeError) as e:
      raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
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

  def decode(self, ids: list[int]) -> str:
    return self.sp.DecodeIds(list(ids))
