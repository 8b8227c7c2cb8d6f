"""Batched greedy generation for evaluation: many prompts, each with its own images, per call.

`Sphinx.generate_ids` serves one prompt; benchmarks need throughput. Here a batch of prompts
(each its own text, its own images at its own image slots) is decoded in one call of
`inference.generate.generate`, the rows sharded over the mesh's ('data', 'fsdp') axes. Shapes
are fixed per run -- rows, padded length, images per prompt, new tokens -- so a benchmark
compiles once. Padding rows (to fill the last batch and the mesh) decode too; their output is
dropped.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.experimental import multihost_utils

from sphinx_jax import sharding
from sphinx_jax.configs import SphinxConfig
from sphinx_jax.inference.generate import generate, trim
from sphinx_jax.inference.sampling import Sampling
from sphinx_jax.models.llama import init_cache
from sphinx_jax.models.sphinx import Sphinx as SphinxModule

LENGTH_BUCKET = 128  # padded prompt lengths are multiples of this


@dataclasses.dataclass(frozen=True)
class Prompt:
  """One row: tokens (0 at image slots), image_mask, and its images {'vit': [n, V, s, s, 3],
  'convnext': [n, V, t, t, 3]} (n = number of image blocks in image_mask; None for none)."""

  tokens: np.ndarray
  image_mask: np.ndarray
  images: dict[str, np.ndarray] | None


def padded_length(longest: int) -> int:
  return -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET


def generate_batch(model, prompts: list[Prompt], *, rows: int, length: int, n_images: int,
                   max_new_tokens: int, stops: tuple[tuple[int, ...], ...] = (),
                   eos_id: int | None = None) -> list[list[int]]:
  """Greedy new ids for each prompt (EOS / stop sequence excluded), `rows` rows of `length`
  slots with room for `n_images` images each; `model` is an `inference.Sphinx`."""
  if len(prompts) > rows or rows % sharding.batch_multiple(model.mesh):
    raise ValueError(f"{len(prompts)} prompts in {rows} rows; rows must be a multiple of "
                     f"{sharding.batch_multiple(model.mesh)} (the mesh's data x fsdp)")
  tokens = np.zeros((rows, length), np.int32)
  image_mask = np.zeros((rows, length), bool)
  lengths = np.ones((rows,), np.int32)
  views = {k: (model.config.n_views, s, s, 3) for k, s in model.config.view_sizes.items()}
  images = {k: np.zeros((rows, n_images, *v), np.float32) for k, v in views.items()}
  for i, p in enumerate(prompts):
    if len(p.tokens) > length:
      raise ValueError(f"prompt of {len(p.tokens)} slots does not fit length {length}")
    tokens[i, :len(p.tokens)] = p.tokens
    image_mask[i, :len(p.tokens)] = p.image_mask
    lengths[i] = len(p.tokens)
    for k, v in (p.images or {}).items():
      images[k][i, :len(v)] = v
  batch = {"tokens": tokens, "image_mask": image_mask}
  if n_images:
    batch["images"] = images
  put = functools.partial(shard_rows, model.mesh)
  with sharding.use_mesh(model.mesh):
    out = _generate(model.params, jax.tree.map(put, batch), put(lengths), cfg=model.config,
                    max_new_tokens=max_new_tokens, eos_id=eos_id, stops=stops)
    out = multihost_utils.process_allgather(out, tiled=True)
  return [trim(out[i], eos_id, stops) for i in range(len(prompts))]


def shard_rows(mesh, x: np.ndarray) -> jax.Array:
  """Rows split over the devices; every process holds the whole batch and gives its part."""
  return jax.make_array_from_callback(x.shape, sharding.batch_sharding(mesh, x.ndim),
                                      lambda index: x[index])


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "eos_id", "stops"))
def _generate(params, batch, lengths, *, cfg: SphinxConfig, max_new_tokens: int, eos_id, stops):
  rows, length = batch["tokens"].shape
  return generate(SphinxModule(cfg), params, batch, lengths, jax.random.key(0),
                  cache=init_cache(cfg.llm, rows, length + max_new_tokens),
                  step_method=SphinxModule.decode, max_new_tokens=max_new_tokens,
                  sampling=Sampling(), eos_id=eos_id, stop_sequences=stops)
