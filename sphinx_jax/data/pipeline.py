"""Grain pipelines: a seeded mixture of sources -> Samples -> padded batches, checkpointable.

Each source is shuffled (reshuffled every epoch) and repeated, and the sources are mixed by
`weights` (default: proportional to their sizes). A record becomes a Sample in grain's reading
threads; a bad one becomes a `Skipped` marker that the consumer logs (SkipLog), or, in strict
mode, raises. Training rows are read by position (`Batches`: a bad record's row is redrawn), so
a process can read only its own rows; `samples` (for `launch data`) drops bad records instead.
Bad means any Exception while that one record becomes a sample, not only BadRecord: one odd
record must not kill a run. An unexpected type may be a bug rather than bad data, so its first
traceback is logged once per type (strict mode raises it as a BadRecord chained to the
original). Stage 1 adds `text_rows` rows per batch packed from a text corpus
(concatenate [BOS doc EOS] then split, as the reference's falcon_packed): a fixed budget of
text_rows x seq_len text tokens next to `batch_size` image-caption rows. `Batches.get_state()` /
`set_state()` resume exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading

import grain
import jax
import numpy as np

from sphinx_jax.configs import LlamaConfig
from sphinx_jax.data.batching import collate
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.sample import Layout, Sample, make_sample
from sphinx_jax.data.skips import BadRecord, SkipLog, Skipped
from sphinx_jax.data.sources import TextCorpus
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.models.batch import first_fit
from sphinx_jax.util.errors import UserError

log = logging.getLogger(__name__)
_WARNED_LOCK = threading.Lock()  # module-level: a Guarded must stay picklable for grain


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What a training run reads. `sources` are specs from data.sources / mimic_it / tfds_source.

  The image geometry -- `view_plan` and `tokens_per_image` (K, the slots of one image: all its
  views, 291 x views for SPHINX) -- is the model's: a training Experiment leaves both None and
  the run fills them from its model config (`for_model`). A data config read on its own (`launch
  data`, the data tests) states them. A text-only model (the LLM alone) has no views: K = 0 and
  no image slots; its rows are packed corpus rows (`text_rows`, `batch_size` 0) and records of
  text only (one with images is a bad record)."""

  tokenizer: str
  sources: tuple = ()
  weights: tuple[float, ...] | None = None
  view_plan: str | None = None
  tokens_per_image: int | None = None
  seq_len: int = 2048
  max_images: int = 1
  batch_size: int = 4
  corpus: TextCorpus | None = None
  text_rows: int = 0
  # Samples per training row: row k holds the mixture's samples k*pack .. k*pack+pack-1, packed
  # in order while they fit (seq_len slots, max_images images; models.batch), each its own
  # attention segment; one that does not fit is dropped and counted. 1: one sample per row.
  pack: int = 1
  seed: int = 0
  strict: bool = False
  threads: int = 4

  def __post_init__(self):
    if not self.sources and not self.text_rows:
      raise UserError("DataConfig needs at least one source, or a corpus and text_rows")
    if self.batch_size and not self.sources:
      raise UserError(f"batch_size {self.batch_size} with no sources: give sources, or only "
                      "text_rows from the corpus (batch_size=0)")
    if self.weights is not None and len(self.weights) != len(self.sources):
      raise UserError(f"{len(self.weights)} weights for {len(self.sources)} sources")
    if self.weights is not None and min(self.weights) <= 0:
      raise UserError(f"mixture weights must be positive, got {self.weights}")
    if self.pack < 1:
      raise UserError(f"pack {self.pack}: samples per row must be at least 1")
    if self.text_rows and self.corpus is None:
      raise UserError("text_rows needs a corpus")
    if self.view_plan is not None and self.view_plan not in VIEW_PLANS:
      raise UserError(f"unknown view plan {self.view_plan!r}; known: {', '.join(VIEW_PLANS)}")
    if (self.view_plan is None) != (self.tokens_per_image in (None, 0)):
      raise UserError("DataConfig: give view_plan and tokens_per_image together, or neither (a "
                      "training run takes both from its model; tokens_per_image=0 alone: text "
                      "only)")

  def for_model(self, cfg) -> "DataConfig":
    """This data laid out for the model config `cfg`: a SphinxConfig's view plan and image
    tokens, or no images for a LlamaConfig (text only). Geometry the config states must be the
    model's."""
    if isinstance(cfg, LlamaConfig):  # the LLM alone
      if self.view_plan is not None:
        raise UserError(f"the data states view plan {self.view_plan!r}; a text-only model has "
                        "no views")
      return dataclasses.replace(self, tokens_per_image=0, max_images=0)
    geometry = (cfg.view_plan, cfg.image_tokens)
    if self.view_plan is not None and (self.view_plan, self.tokens_per_image) != geometry:
      raise UserError(f"the data states view plan {self.view_plan!r} with {self.tokens_per_image}"
                      f" tokens per image, the model {geometry[0]!r} with {geometry[1]}; leave "
                      "both unset in a training config (they come from the model)")
    return dataclasses.replace(self, view_plan=geometry[0], tokens_per_image=geometry[1])

  @property
  def layout(self) -> Layout:
    if self.tokens_per_image is None:
      raise UserError("this DataConfig has no image geometry (view_plan, tokens_per_image): "
                      "state it, or lay it out for a model (DataConfig.for_model)")
    if not self.tokens_per_image:  # text only
      return Layout(None, 0, self.seq_len, 0)
    return Layout(VIEW_PLANS[self.view_plan], self.tokens_per_image, self.seq_len, self.max_images)

  @property
  def source_names(self) -> list[str]:
    """Names by source_id; the corpus, if any, comes last."""
    specs = list(self.sources) + ([self.corpus] if self.text_rows else [])
    return [s.label for s in specs]


class Guarded:
  """A grain data source: record i of an opened source as `fn(example)`, or Skipped when that
  raises any Exception (strict: raised, as BadRecord)."""

  def __init__(self, opened, fn, strict: bool):
    self.opened, self.fn, self.strict = opened, fn, strict
    self._warned: set[type] = set()

  def __len__(self) -> int:
    return len(self.opened)

  def __getitem__(self, i: int):
    try:
      return self.fn(self.opened[i])
    except BadRecord as e:
      if self.strict:
        raise
      return Skipped(e.file, e.record, e.reason)
    except Exception as e:  # noqa: BLE001 -- any failure of one record is that record's
      why = " ".join(str(e).split())  # one line
      bad = BadRecord(self.opened.file, self.opened.record_id(i), f"{type(e).__name__}: {why}")
      if self.strict:
        raise bad from e
      self._warn_once(e, bad)
      return Skipped(bad.file, bad.record, bad.reason)

  def _warn_once(self, e: Exception, bad: BadRecord) -> None:
    with _WARNED_LOCK:
      first = type(e) not in self._warned
      self._warned.add(type(e))
    if first:
      log.warning("%s; skipped, as every further %s in %s (strict=True raises it)", bad,
                  type(e).__name__, self.opened.file, exc_info=e)


def open_source(spec):
  """An opened source, refused when it has no records."""
  opened = spec.open()
  if not len(opened):
    raise UserError(f"{opened.file}: no records")
  return opened


def _keeper(skips: SkipLog, records: int):
  """The skip filter over endless epochs of `records` records, failing loudly when every record
  may be bad (endless skipping would hang the pipeline). Reshuffled epochs can put one epoch's
  bad records right after the last epoch's: with one good record left, a run of bad ones is
  shorter than twice the records."""
  run, limit = 0, 2 * records

  def keep(item) -> bool:
    nonlocal run
    if skips.keep(item):
      run = 0
      return True
    run += 1
    if run > limit:
      raise UserError(f"{run} records in a row were skipped; is every record bad?\n"
                       + skips.summary())
    return False

  return keep


def read_options(config: DataConfig) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=config.threads, prefetch_buffer_size=4 * config.threads)


def mixed_map(specs, weights, fn, config) -> tuple[grain.MapDataset, int]:
  """(the seeded, endless, randomly accessible mixture of `specs` by `weights` (default their
  sizes), each example as `fn(example, source_id)` or a Skipped marker; the number of records).
  `config` gives seed and strict."""
  opened = [open_source(s) for s in specs]
  parts = [grain.MapDataset.source(Guarded(src, functools.partial(fn, source_id=i),
                                           config.strict))
           .shuffle(seed=config.seed + i).repeat() for i, src in enumerate(opened)]
  weights = weights or [len(src) for src in opened]
  mixed = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
  return mixed, sum(len(src) for src in opened)


def mixture(specs, weights, fn, config, skips: SkipLog) -> grain.IterDataset:
  """`mixed_map` read in order, bad records logged in `skips` and dropped; `config` also gives
  the reader threads."""
  mixed, records = mixed_map(specs, weights, fn, config)
  return mixed.to_iter_dataset(read_options(config)).filter(_keeper(skips, records))


def samples(config: DataConfig, skips: SkipLog, tok: Tokenizer | None = None) -> grain.IterDataset:
  """The seeded, endless mixture of `config.sources` as Samples (skips logged and dropped)."""
  tok = tok or Tokenizer(config.tokenizer)
  return mixture(config.sources, config.weights,
                 functools.partial(make_sample, tok=tok, layout=config.layout), config, skips)


def _document(example, tok: Tokenizer) -> dict:
  return {"tokens": np.asarray(tok.encode(example.prompt, bos=True, eos=True), np.int32)}


def _text_row(row: dict, source_id: int) -> Sample:
  tokens = row["tokens"]
  loss = np.ones(len(tokens), bool)
  loss[0] = False  # nothing predicts a row's first token
  return Sample(tokens, np.zeros(len(tokens), bool), loss, {}, source_id, "packed text")


def text_rows(config: DataConfig, skips: SkipLog, tok: Tokenizer) -> grain.IterDataset:
  """The corpus as endless rows of exactly seq_len tokens, documents packed back to back."""
  source = Guarded(open_source(config.corpus), functools.partial(_document, tok=tok),
                   config.strict)
  ds = grain.MapDataset.source(source).shuffle(seed=config.seed + len(config.sources)).repeat()
  ds = ds.to_iter_dataset(read_options(config)).filter(_keeper(skips, len(source)))
  ds = grain.experimental.ConcatThenSplitIterDataset(ds, length_struct={"tokens": config.seq_len})
  return ds.map(functools.partial(_text_row, source_id=len(config.sources)))


# A bad record's row takes the record at a hashed position of the same mixture instead (any
# source, any epoch), then another: 64 draws fail only when almost every record is bad.
ROW_DRAWS = 64
_MASK = 2**62 - 1


def _redraw(k: int, a: int) -> int:
  """Position of draw `a` for row `k`: splitmix64 of (k, a), below 2**62."""
  z = (k * 0x9E3779B97F4A7C15 + a * 0xBF58476D1CE4E5B9) & (2**64 - 1)
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
  return (z ^ (z >> 31)) & _MASK


class _Row:
  """Row k of the training stream, computable by any process alone: the mixture's record k, or,
  when that one is bad, the record at `_redraw(k, 1)`, then `_redraw(k, 2)`, ... Returns (sample
  or None, the Skipped markers met), for the consumer to log."""

  def __init__(self, config: DataConfig, tok: Tokenizer):
    fn = functools.partial(make_sample, tok=tok, layout=config.layout)
    self.mixed, _ = mixed_map(config.sources, config.weights, fn, config)

  def __call__(self, k: int):
    skipped = []
    for a in range(ROW_DRAWS):
      item = self.mixed[k if a == 0 else _redraw(k, a)]
      if not isinstance(item, Skipped):
        return item, skipped
      skipped.append(item)
    return None, skipped


class Batches:
  """Endless batches under the batch contract: `batch_size` mixture rows (+ `text_rows` packed
  corpus rows), or only the rows `rows` of each (a process's addressable rows), in the same
  order as the whole batch's. Row j of step s is the mixture's record s * batch_size + j (see
  `_Row` for bad ones), so which rows a process reads changes nothing in them; only the packed
  corpus is read sequentially, by every process (tokenising only), and is the whole state next
  to the step: `get_state()` is the same on every process, `set_state()` resumes exactly."""

  def __init__(self, config: DataConfig, skips: SkipLog, rows=None):
    total = config.batch_size + config.text_rows
    rows = sorted(range(total) if rows is None else rows)
    if not rows or rows[0] < 0 or rows[-1] >= total:
      raise UserError(f"rows {rows}: a batch has rows 0 .. {total - 1}")
    self.config, self.skips = config, skips
    self.tok = Tokenizer(config.tokenizer)
    self.sample_rows = [j for j in rows if j < config.batch_size]
    self.text_picks = [j - config.batch_size for j in rows if j >= config.batch_size]
    self.row = _Row(config, self.tok) if config.sources else None
    # by this reader: records made into samples for its rows (bad ones included), and batches
    self.decoded = self.batches_read = 0
    self.packed = self.overflow = 0  # samples packed into rows, and dropped for lack of room
    self.set_state({"step": 0, "text": None})

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return {"step": self.step, "text": self.text.get_state() if self.text else None}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or set(state) != {"step", "text"}:
      raise UserError(f"data state {str(state)[:80]}: not a training stream's (step, text); a "
                      "checkpoint from before per-process reading cannot resume its data")
    self.step = state["step"]
    r, size, picks = len(self.sample_rows), self.config.batch_size, self.sample_rows
    self.samples = None
    if r:
      k = self.config.pack
      index = grain.MapDataset.range(self.step * r, sys.maxsize)
      self.samples = iter(index.map(lambda i: [self.row(((i // r) * size + picks[i % r]) * k + a)
                                               for a in range(k)])
                          .to_iter_dataset(read_options(self.config)).batch(r, batch_fn=list))
    self.text = None
    if self.config.text_rows:
      self.text = iter(text_rows(self.config, self.skips, self.tok)
                       .batch(self.config.text_rows, batch_fn=list))
      if state["text"] is not None:
        self.text.set_state(state["text"])

  def __next__(self) -> dict:
    out = []
    for drawn in next(self.samples) if self.samples else []:
      row = []
      for sample, skipped in drawn:
        self.decoded += 1 + len(skipped)
        for marker in skipped:
          self.skips.keep(marker)
        if sample is None:
          raise UserError(f"{ROW_DRAWS} records drawn for one batch row were all bad; is "
                          "(almost) every record bad?\n" + self.skips.summary())
        self.skips.keep(sample)  # counts its notes
        row.append(sample)
      out.append(self._packed(row) if self.config.pack > 1 else row[0])
    if self.text:
      text = next(self.text)  # every process packs the whole corpus stream: one state
      out += [text[j] for j in self.text_picks]
    self.step += 1
    self.batches_read += 1
    return collate(out, layout=self.config.layout)


  def _packed(self, samples: list[Sample]) -> list[Sample]:
    """The samples of one row that fit it, in order (models.batch.first_fit's first bin)."""
    layout = self.config.layout
    fitted = first_fit(samples, length=layout.seq_len, n_images=layout.max_images)
    self.packed += len(fitted[0])
    self.overflow += len(samples) - len(fitted[0])
    return fitted[0]


def batches(config: DataConfig, skips: SkipLog, rows=None) -> Batches:
  """`Batches(config, skips, rows)`: the training stream (all rows, or a process's)."""
  return Batches(config, skips, rows)


def batch_shapes(config: DataConfig) -> dict:
  """The shapes and dtypes (ShapeDtypeStructs) of `batches(config)`'s batches, reading nothing."""
  rows = config.batch_size + config.text_rows
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype),
                      collate([], config.layout))


def check(config: DataConfig, skips: SkipLog) -> int:
  """Read every record of every source once, as training reads it (the corpus as packed
  documents, never cut); returns how many made good samples."""
  tok = Tokenizer(config.tokenizer)
  good = 0
  readers = [(spec, functools.partial(make_sample, tok=tok, layout=config.layout, source_id=i))
             for i, spec in enumerate(config.sources)]
  if config.corpus:
    readers.append((config.corpus, functools.partial(_document, tok=tok)))
  for spec, read in readers:
    source = Guarded(open_source(spec), read, config.strict)
    for item in grain.MapDataset.source(source).to_iter_dataset(read_options(config)):
      good += skips.keep(item)
  return good
