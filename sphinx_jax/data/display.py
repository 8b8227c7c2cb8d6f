"""A sample as readable text: what the model sees, token by token.

`<s>`/`</s>` are BOS/EOS, `<image>` one image block (K slots; a video shows one per frame) and
supervised tokens are wrapped in OPEN/CLOSE. Pieces are shown verbatim (a word piece's leading
`▁` as a space, byte pieces as their bytes), so the spaces a span starts with are visible.
"""
from __future__ import annotations

import numpy as np

from sphinx_jax.data.tokenizer import Tokenizer

OPEN, CLOSE = "⟦", "⟧"


def _piece(tok: Tokenizer, i: int) -> bytes:
  sp = tok.sp
  if i == tok.bos_id:
    return b"<s>"
  if i == tok.eos_id:
    return b"</s>"
  if sp.IsByte(i):
    return bytes([int(sp.IdToPiece(i)[3:5], 16)])
  if sp.IsUnknown(i):
    return "⁇".encode()
  return sp.IdToPiece(i).replace("▁", " ").encode()


def render(tokens, image_mask, loss_mask, tok: Tokenizer, tokens_per_image: int) -> str:
  """Text of one row (valid slots only), images and supervised spans marked."""
  tokens, image_mask, loss_mask = map(np.asarray, (tokens, image_mask, loss_mask))
  out, supervised, i = [], False, 0
  while i < len(tokens):
    if supervised != bool(loss_mask[i]):
      out.append((OPEN if loss_mask[i] else CLOSE).encode())
      supervised = bool(loss_mask[i])
    if image_mask[i]:
      out.append(b"<image>")
      i += tokens_per_image
    else:
      out.append(_piece(tok, int(tokens[i])))
      i += 1
  if supervised:
    out.append(CLOSE.encode())
  return b"".join(out).decode("utf-8", errors="replace")
