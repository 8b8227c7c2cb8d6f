"""Autoregressive decoding over a static KV cache, as one `lax.while_loop`.

The loop is model-agnostic: callers prefill their prompt (tokens, or text plus image embeddings)
and hand over a `step(cache, tokens, t)` that runs one new position per row. Rows advance in
lock step; a row is done at EOS or when its last tokens equal a stop sequence.
"""
from __future__ import annotations

import contextlib

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from sphinx_jax.inference.sampling import Sampling, sample

DONE = -1  # fills a row's output after it stopped

Step = Callable[[object, jax.Array, jax.Array], tuple[jax.Array, object]]


def generate(model, params, inputs: dict, lengths: jax.Array, key: jax.Array, *, cache,
             step_method=None, **decode_args):
  """Prefill `model.apply(params, **inputs)` into `cache`, then decode after each row's last
  prompt slot (`lengths - 1`) with `model.apply(..., method=step_method)` one slot at a time.
  The prefill applies the output head (the model's `head` method) to each row's last slot only."""
  batch = lengths.shape[0]
  hidden, cache = model.apply(params, **inputs, cache=cache, head=False)
  last = hidden[jnp.arange(batch), lengths - 1]
  last = model.apply(params, last[:, None], method="head")[:, 0]

  def step(cache, new_tokens, t):
    index = lengths + t
    logits, cache = model.apply(params, new_tokens[:, None], positions=index[:, None],
                                cache=cache, cache_index=index, method=step_method)
    return logits[:, 0], cache

  return decode(step, last, cache, key, **decode_args)


def decode(step: Step, logits: jax.Array, cache, key: jax.Array, *, max_new_tokens: int,
           sampling: Sampling, eos_id: int | None, stop_sequences: tuple[tuple[int, ...], ...],
           stream: bool = False, budgets: jax.Array | None = None):
  """Tokens [B, max_new_tokens] sampled after `logits` [B, V]; DONE after a row stops.

  `budgets` [B] (optional, at most max_new_tokens): each row's own cap, a traced value, so
  requests with different caps share one compiled loop. With `stream`, each step's tokens [B]
  go to the sink of the enclosing `streaming(...)` block.
  """
  batch = logits.shape[0]
  out = jnp.full((batch, max_new_tokens), DONE, jnp.int32)

  def cond(state):
    t, _, _, _, done, _ = state
    return (t < max_new_tokens) & ~jnp.all(done)

  def body(state):
    t, logits, cache, out, done, key = state
    key, sub = jax.random.split(key)
    tokens = sample(logits, sub, sampling)
    out = out.at[:, t].set(jnp.where(done, DONE, tokens))
    if stream:
      io_callback(_emit, None, jnp.where(done, DONE, tokens), ordered=True)
    stop = jnp.zeros_like(done) if eos_id is None else tokens == eos_id
    for seq in stop_sequences:
      k = len(seq)
      tail = jax.lax.dynamic_slice_in_dim(out, jnp.maximum(t + 1 - k, 0), k, axis=1)
      stop |= (t + 1 >= k) & jnp.all(tail == jnp.asarray(seq, jnp.int32), axis=1)
    if budgets is not None:
      stop |= t + 1 >= budgets
    done = done | stop
    logits, cache = step(cache, tokens, t)
    return t + 1, logits, cache, out, done, key

  state = (jnp.int32(0), logits, cache, out, jnp.zeros((batch,), bool), key)
  return jax.lax.while_loop(cond, body, state)[3]


_sinks: list[Callable[[np.ndarray], None]] = []


def _emit(tokens: np.ndarray) -> None:
  if _sinks:
    _sinks[-1](np.asarray(tokens))


@contextlib.contextmanager
def streaming(sink: Callable[[np.ndarray], None]):
  """Route the tokens of `decode(..., stream=True)` run inside this block to `sink(tokens [B])`.

  One static callback serves every call, so streaming does not recompile; block on the result
  inside the `with`.
  """
  _sinks.append(sink)
  try:
    yield
  finally:
    _sinks.pop()


def trim(row: np.ndarray, eos_id: int | None, stop_sequences: Sequence[Sequence[int]]) -> list[int]:
  """A row of `decode` output as generated ids, without the EOS or stop sequence that ended it."""
  ids = [int(t) for t in row if t != DONE]
  if ids and eos_id is not None and ids[-1] == eos_id:
    return ids[:-1]
  for seq in stop_sequences:
    if len(seq) and ids[-len(seq):] == list(seq):
      return ids[:-len(seq)]
  return ids
