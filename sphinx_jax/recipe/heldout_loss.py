"""Held-out loss: the mean next-token loss over one ordered pass of a source (how the embedded
default compares the real, synthetic and mixed stage-1 models on each caption domain).

The loss is the training loss (models.loss: supervised slots only, summed then divided by the
token count), so it is comparable to the training curves. Bad records are skipped and counted.
"""
from __future__ import annotations

import functools


from sphinx_jax import sharding
from sphinx_jax.data.batching import collate
from sphinx_jax.data.pipeline import Guarded
from sphinx_jax.data.sample import Layout, make_sample
from sphinx_jax.data.skips import Skipped
from sphinx_jax.data.tokenizer import Tokenizer


def mean_loss(model, source, layout: Layout, tokenizer: Tokenizer, batch_size: int = 16,
              limit: int | None = None) -> dict:
  """{'loss', 'tokens', 'skipped'} of `model` (an `inference.Sphinx`) over the first `limit`
  (default: every) records of `source` (a data source spec), `batch_size` rows at a time."""
  guarded = Guarded(source.open(), functools.partial(make_sample, tok=tokenizer, layout=layout,
                                                     source_id=0), strict=False)
  rows = sharding.batch_rows(batch_size, model.mesh)
  read = [guarded[i] for i in range(min(len(guarded), limit or len(guarded)))]
  samples = [s for s in read if not isinstance(s, Skipped)]
  skipped = len(read) - len(samples)
  total, count = 0.0, 0.0
  for start in range(0, len(samples), rows):
    chunk = samples[start:start + rows]
    batch = collate(chunk + [chunk[0]] * (rows - len(chunk)), layout)
    batch["loss_mask"][len(chunk):] = False  # padding rows count nothing
    sums = model.loss_sums(batch)
    total += float(sums["sum"])
    count += float(sums["count"])
  return {"loss": total / max(count, 1), "tokens": int(count), "skipped": skipped}

