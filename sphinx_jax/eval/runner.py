"""Running a benchmark: samples -> batched greedy generation -> predictions.jsonl -> summary.json.

Each finished batch is appended to `predictions.jsonl` (one record per sample: id, prediction,
reference, question, the adapter's metadata) and synced, so an interrupted run loses at most the
batch in flight: a rerun with the same settings skips every id already there (a truncated last
line, from a kill mid-write, is dropped) and computes the rest. The summary is computed from the
whole file at the end, so it is the same whether the run was interrupted or not. `run.json`
records the settings; resuming with different ones is refused, since the records would mix.
Prompt shapes are fixed for the whole run (the longest prompt, bucketed), so it compiles once.
With several processes (multi-host), all run the same batches and only process 0 writes files.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from sphinx_jax import sharding
from sphinx_jax.eval import prompts
from sphinx_jax.eval.benchmarks import BENCHMARKS
from sphinx_jax.inference.generate import trim
from sphinx_jax.inference.sphinx_model import stop_ids
from sphinx_jax.models.batch import Prompt, bucketed
from sphinx_jax.eval.samples import Question, benchmark_image
from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import write_atomic

PREDICTIONS, SUMMARY, RUN = "predictions.jsonl", "summary.json", "run.json"
log = logging.getLogger(__name__)


def evaluate(model, name: str, data: str | os.PathLike, out: str | os.PathLike, *,
             split: str | None = None, limit: int | None = None, batch_size: int = 8,
             shots: int = 0, seed: int = 0, max_new_tokens: int | None = None,
             checkpoint: str | None = None, scorer: str | None = None,
             progress: bool = True) -> dict:
  """Run benchmark `name` on the files in `data` with `model` (an `inference.Sphinx`), writing
  predictions and the summary into `out`; returns the summary."""
  if name not in BENCHMARKS:
    raise UserError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
  bench = BENCHMARKS[name]
  if shots and not bench.in_context:
    raise UserError(f"{name}: in-context shots are for coco_captions only")
  if model.tokenizer is None:
    raise UserError("this checkpoint has no tokenizer.model: evaluation needs one")
  scorer, score = bench.scorer(scorer)
  split = split or bench.split
  samples = bench.read(Path(data), split, shots=shots, seed=seed)[:limit]
  if not samples:
    raise UserError(f"{data}: no {name} samples (split {split})")
  if len({s.id for s in samples}) != len(samples):
    raise UserError(f"{data}: {name} sample ids are not unique")
  budget = bench.max_new_tokens if max_new_tokens is None else max_new_tokens
  if budget < 1:
    raise UserError(f"max_new_tokens {budget}: must be at least 1")
  out = Path(out)
  if _writer():
    out.mkdir(parents=True, exist_ok=True)
  _check_run(out / RUN, {"benchmark": name, "split": split, "shots": shots, "seed": seed,
                         "max_new_tokens": budget, "checkpoint": checkpoint})
  done = load_predictions(out / PREDICTIONS)
  pending = [s for s in samples if s.id not in done]
  if pending:
    _generate_all(model, pending, samples, out / PREDICTIONS, done, budget, batch_size, name,
                  progress)
  records = [done[s.id] for s in samples]
  summary = {"benchmark": name, "split": split, "shots": shots, "samples": len(records),
             **({"scorer": scorer} if scorer else {}), **score(records)}
  if _writer():
    write_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    if bench.export is not None:
      bench.export(records, out)
  return summary


def _writer() -> bool:
  return jax.process_index() == 0


def _generate_all(model, pending, samples, path, done, budget, batch_size, name, progress):
  tokenizer, k = model.tokenizer, model.config.image_tokens
  lengths = [len(prompts.tokens(tokenizer, s, k)[0]) for s in samples]
  longest = int(np.argmax(lengths))
  if lengths[longest] + budget > model.config.llm.max_seq_len:
    raise UserError(f"sample {samples[longest].id}: prompt ({lengths[longest]} positions with "
                     f"images) + {budget} new tokens exceeds max_seq_len "
                     f"{model.config.llm.max_seq_len}")
  rows = sharding.batch_rows(batch_size, model.mesh)
  shapes = {"rows": rows, "length": bucketed(lengths[longest]), "max_new_tokens": budget,
            "n_images": max(len(s.images) for s in samples), "stops": (stop_ids(tokenizer),),
            "eos_id": tokenizer.eos_id}
  writer = _writer()
  if writer:
    (path.parent / SUMMARY).unlink(missing_ok=True)  # never a stale summary beside partial work
  batches = [pending[i:i + rows] for i in range(0, len(pending), rows)]
  bar = tqdm(total=len(samples), initial=len(samples) - len(pending), desc=name,
             disable=not (progress and writer))
  with open(path if writer else os.devnull, "a") as f, ThreadPoolExecutor(1) as pool:
    ahead = pool.submit(_prepare, model, batches[0])
    for i, batch in enumerate(batches):
      ready = ahead.result()
      if i + 1 < len(batches):  # load and preprocess the next batch while this one decodes
        ahead = pool.submit(_prepare, model, batches[i + 1])
      for sample, ids in zip(batch, generate_batch(model, ready, **shapes)):
        done[sample.id] = _record(sample, tokenizer.decode(ids))
        f.write(json.dumps(done[sample.id]) + "\n")
      f.flush()
      os.fsync(f.fileno())
      bar.update(len(batch))
  bar.close()


def generate_batch(model, prompts: list[Prompt], *, rows: int, length: int, n_images: int,
                   max_new_tokens: int, stops: tuple[tuple[int, ...], ...] = (),
                   eos_id: int | None = None) -> list[list[int]]:
  """Greedy new ids for each prompt (EOS / stop sequence excluded), decoded together in `rows`
  rows of `length` slots with room for `n_images` images each (`Sphinx.generate`). The shapes
  are fixed per run, so a benchmark compiles once; padding rows decode too, their output
  dropped."""
  out = model.generate(model.batch(prompts, n_rows=rows, length=length, n_images=n_images),
                       max_new_tokens, eos_id=eos_id, stops=stops)
  return [trim(out[i], eos_id, stops) for i in range(len(prompts))]


def _prepare(model, batch: list[Question]) -> list[Prompt]:
  out = []
  for sample in batch:
    tokens, mask = prompts.tokens(model.tokenizer, sample, model.config.image_tokens)
    views = [model.preprocess(benchmark_image(ref)) for ref in sample.images]
    images = {k: np.stack([v[k] for v in views]) for k in views[0]} if views else None
    out.append(Prompt(tokens, mask, images))
  return out


def _record(sample: Question, text: str) -> dict:
  """The answer as the reference cuts it (at the '###' separator, stripped), with what the
  metric needs."""
  return {"id": sample.id, "prediction": text.split("###")[0].strip(),
          "reference": sample.reference, "question": sample.question, **sample.meta}


def load_predictions(path: Path) -> dict[str, dict]:
  """Finished records by id; a truncated last line is dropped from the file (a kill mid-write),
  any other unreadable line is an error naming it."""
  if not path.exists():
    return {}
  data = path.read_bytes()
  records, good, start = {}, 0, 0
  lines = data.split(b"\n")
  for number, line in enumerate(lines, 1):
    end = min(start + len(line) + 1, len(data))
    if line.strip():
      try:
        record = json.loads(line)
      except ValueError:
        if number < len(lines):
          raise UserError(f"{path}:{number}: unreadable record; remove the line to resume")
        log.warning("%s: dropping a truncated last line (%d bytes)", path, len(line))
        break
      if not isinstance(record, dict) or "id" not in record:
        raise UserError(f"{path}:{number}: record without an 'id'")
      records[record["id"]] = record
    good = start = end
  if _writer():
    with open(path, "r+b") as f:
      f.truncate(good)
      if good and data[good - 1:good] != b"\n":
        f.seek(good)
        f.write(b"\n")
  return records


def _check_run(path: Path, settings: dict) -> None:
  if path.exists():
    old = _read_run(path)
    if old != settings:
      diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
      raise UserError(f"{path}: this folder holds a run with other settings {diff} "
                       f"(was, now); use another --out or delete it")
  elif _writer():
    write_atomic(path, json.dumps(settings, indent=1))


def _read_run(path: Path) -> dict:
  """The settings a folder's earlier run recorded; a damaged file is an error naming it."""
  try:
    old = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: unreadable run settings ({e}); use another --out or delete the "
                     "folder") from None
  if not isinstance(old, dict):
    raise UserError(f"{path}: expected a JSON object of run settings, got "
                     f"{type(old).__name__}; use another --out or delete the folder")
  return old

