"""Next-token cross entropy over supervised slots only (image slots and padding never count).

The loss at slot i predicts tokens[i+1] where loss_mask[i+1]: the last image slot predicts the
first text token after it, as the reference's `output(h[:, image_words:])`. Sums and counts are
returned so micro-batches and hosts combine exactly; rows with images and text-only rows are
also summed apart (the paper's two stage-1 curves), and so is each data source (by the slots'
`source_id`: stage 1's domains and its text corpus, stage 2's tasks).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sphinx_jax.models.quantization import weight
from sphinx_jax.util.errors import UserError


SUM_KEYS = ("sum", "count", "tokens", "image_sum", "image_count", "text_sum", "text_count")
SOURCE_KEYS = ("source_sum", "source_count")  # [num_sources] each
WEIGHTINGS = ("token", "sample")


def zero_sums(num_sources: int) -> dict:
  """What `loss_sums` returns, all zeros: the start of an accumulation over micro-batches."""
  return {**dict.fromkeys(SUM_KEYS, jnp.float32(0)),
          **{k: jnp.zeros(num_sources, jnp.float32) for k in SOURCE_KEYS}}


def loss_sums(logits, batch, weighting: str = "token", num_sources: int = 1) -> dict:
  """{'sum', 'count', 'tokens', 'image_sum', 'image_count', 'text_sum', 'text_count'} (float32
  scalars) and {'source_sum', 'source_count'} ([num_sources], by `batch['source_id']`): sum /
  count is the loss. `weighting` 'token' (the reference): every supervised token counts once;
  'sample': each row's tokens share one unit of weight, so a one-word answer weighs as much as a
  list of boxes (count is then the number of supervised rows)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch["tokens"][:, 1:])
  return _sums(ce, batch, weighting, num_sources)


def chunked_loss_sums(hidden, kernel, batch, weighting: str = "token", num_sources: int = 1,
                      chunk: int = 1024) -> dict:
  """`loss_sums` from the final hidden states [B, T, D] and the output head's kernel [D, V],
  `chunk` positions at a time: the float32 logits of one chunk [B, chunk, V] exist at once, not
  [B, T, V] (their backward recomputes each chunk's). The head is applied as the model applies
  it (both operands in the hidden states' dtype; a quantized kernel dequantized), so the loss is
  the unchunked one."""
  hidden, targets = hidden[:, :-1], batch["tokens"][:, 1:]
  rows, length = targets.shape
  n = -(-length // chunk)
  pad = n * chunk - length
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(rows, n, chunk, -1)
  targets = jnp.pad(targets, ((0, 0), (0, pad))).reshape(rows, n, chunk)

  @jax.checkpoint
  def chunk_ce(h, t):
    logits = jax.lax.dot_general(h, weight(kernel, h.dtype), (((2,), (0,)), ((), ())))
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), t)

  ce = jax.lax.map(lambda x: chunk_ce(*x), (hidden.swapaxes(0, 1), targets.swapaxes(0, 1)))
  return _sums(ce.swapaxes(0, 1).reshape(rows, n * chunk)[:, :length], batch, weighting,
               num_sources)


def _sums(ce, batch, weighting: str, num_sources: int) -> dict:
  """The sums of `loss_sums` from the per-position cross entropy [B, T - 1]. A packed row's
  samples (its segments) count as rows would: their own weight with 'sample', image-text or
  text-only by their own image slots, their own source."""
  if weighting not in WEIGHTINGS:
    raise UserError(f"loss weighting {weighting!r} is not one of {WEIGHTINGS}")
  supervised = (batch["loss_mask"][:, 1:] & batch["valid"][:, 1:]).astype(jnp.float32)
  rows, length = batch["segment_ids"].shape
  # one id per (row, segment) for per-sample sums; a target's sample is its own slot's
  sample = (jnp.arange(rows)[:, None] * (length + 1) + batch["segment_ids"]).reshape(-1)
  per_sample = lambda x: jax.ops.segment_sum(  # noqa: E731
      x.reshape(-1), sample, num_segments=rows * (length + 1))
  at_target = lambda x: x.reshape(rows, length)[:, 1:]  # noqa: E731
  weights = supervised
  if weighting == "sample":
    count = per_sample(jnp.pad(supervised, ((0, 0), (1, 0))))
    weights = supervised / jnp.maximum(at_target(count[sample]), 1)
  per_token = ce * weights
  has_image = at_target((per_sample(batch["image_mask"].astype(jnp.float32)) > 0)[sample])
  has_image = has_image.astype(jnp.float32)
  by_source = lambda x: jax.ops.segment_sum(  # noqa: E731
      x.reshape(-1), batch["source_id"][:, 1:].reshape(-1), num_segments=num_sources)
  return {"sum": per_token.sum(), "count": weights.sum(), "tokens": supervised.sum(),
          "image_sum": (per_token * has_image).sum(), "image_count": (weights * has_image).sum(),
          "text_sum": (per_token * (1 - has_image)).sum(),
          "text_count": (weights * (1 - has_image)).sum(),
          "source_sum": by_source(per_token), "source_count": by_source(weights)}


def mean_losses(sums: dict) -> dict:
  """'loss' over all supervised tokens (0 if none), 'loss_image_text', 'loss_text_only' and
  'loss_by_source' ([num_sources]; NaN where the batch has no such rows)."""
  ratio = lambda s, c: jnp.where(c > 0, s / jnp.maximum(c, 1), jnp.nan)  # noqa: E731
  return {"loss": sums["sum"] / jnp.maximum(sums["count"], 1),
          "loss_image_text": ratio(sums["image_sum"], sums["image_count"]),
          "loss_text_only": ratio(sums["text_sum"], sums["text_count"]),
          "loss_by_source": ratio(sums["source_sum"], sums["source_count"])}
