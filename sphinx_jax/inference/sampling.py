"""Next-token sampling: greedy, temperature, top-k and top-p (nucleus), seeded."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sphinx_jax.util.errors import UserError


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 is greedy (argmax); top_k 0 and top_p 1 disable those filters."""

  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0

  def __post_init__(self):
    if self.temperature < 0:
      raise UserError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise UserError(f"top_k must be >= 0, got {self.top_k}")


def sample(logits: jax.Array, key: jax.Array, sampling: Sampling) -> jax.Array:
  """Token ids [B] from float32 logits [B, V]."""
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_k:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p < 1.0:
    logits = _top_p_filter(logits, sampling.top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
  """Keep the smallest set of most likely tokens whose mass reaches top_p (as the reference's
  sample_top_p: a token is dropped when the mass before it already exceeds top_p)."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  sorted_logits = jnp.where(mass_before > top_p, -jnp.inf, sorted_logits)
  inverse = jnp.argsort(order, axis=-1)
  return jnp.take_along_axis(sorted_logits, inverse, axis=-1)
