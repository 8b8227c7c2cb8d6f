"""The training loop: data -> sharded step -> metrics, checkpoints, pre-emption and divergence.

Every step's metrics go to `workdir/metrics.jsonl` (and TensorBoard, and the progress bar); a
checkpoint every `checkpoint_every` steps, on SIGTERM and at the end; `resume` continues from the
newest checkpoint that restores and verifies, exactly (train state + data iterator state), if
the config computes the same run (train.run_config). A non-finite loss stops the run before
anything is saved, so the last checkpoint stays the last good one. One run per workdir
(train.workdir_lock).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import signal
import time
from pathlib import Path

import jax
import numpy as np
import optax
from jax.sharding import Mesh
from tensorboardX import SummaryWriter
from tqdm import tqdm

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import LlamaConfig, SphinxConfig, model_preset
from sphinx_jax.data import pipeline
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.models import lora, quantization
from sphinx_jax.train import optimizer, run_config, state_checkpoints, workdir_lock
from sphinx_jax.train import step as train_step
from sphinx_jax.train.config import Experiment, TrainConfig
from sphinx_jax.train.optimizer import LORA
from sphinx_jax.train.flops import measured_peak_flops, step_flops
from sphinx_jax.util.errors import UserError

log = logging.getLogger(__name__)


class Diverged(UserError):
  """The loss became NaN or infinite."""


def model_config(t: TrainConfig) -> SphinxConfig | LlamaConfig:
  """The architecture, the one source of the run's image geometry: a preset, or the config of
  the checkpoint we start from; with the run's dtypes, remat policy and view plan (the towers
  must take the plan's view sizes). A LlamaConfig (`llm:<preset>`, or an LLM checkpoint) is a
  text-only run of the LLM alone."""
  if t.init_from:
    cfg = params_io.read_model_config(t.init_from)
  else:
    cfg = model_preset(t.model)
  _check_lora(t)
  adapters = dict(lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_targets=t.lora_targets)
  if isinstance(cfg, LlamaConfig):
    if t.view_plan is not None or not set(t.trainable) <= {"llm", LORA}:
      raise UserError(f"a text-only run (the LLM alone) has no views and trains 'llm' (or its "
                      f"'lora' adapters) only; got view_plan={t.view_plan!r}, "
                      f"trainable={t.trainable}")
    return cfg.replace(param_dtype=t.param_dtype, dtype=t.compute_dtype,
                       remat_policy=t.remat_policy, attention=t.attention or cfg.attention,
                       **adapters)
  if t.view_plan is not None and t.view_plan != cfg.view_plan:
    plan = VIEW_PLANS[t.view_plan]
    sizes = (plan.vit.side, plan.convnext.input_side)
    if sizes != (cfg.dinov2.image_size, cfg.convnext_size):
      raise UserError(f"view plan {t.view_plan!r} makes {sizes[0]}-px ViT and {sizes[1]}-px "
                      f"ConvNeXt views; the model's towers take {cfg.dinov2.image_size} and "
                      f"{cfg.convnext_size}")
    log.info("views: %s (%d per image) -> %s (%d per image)", cfg.view_plan, cfg.n_views,
             t.view_plan, plan.num_views)
    cfg = cfg.replace(view_plan=t.view_plan, n_views=plan.num_views)
  trained_towers = set(t.trainable) - {"llm", "mixer", LORA}
  if t.tower_param_dtype not in (None, t.param_dtype) and trained_towers:
    raise UserError(f"tower_param_dtype {t.tower_param_dtype!r} is for frozen towers; "
                    f"{sorted(trained_towers)} are trained (their master weights stay "
                    f"{t.param_dtype})")
  cfg = cfg.with_tower_dtypes(t.tower_param_dtype or t.param_dtype, t.compute_dtype)
  return cfg.replace(llm=cfg.llm.replace(param_dtype=t.param_dtype, dtype=t.compute_dtype,
                                         remat_policy=t.remat_policy,
                                         attention=t.attention or cfg.llm.attention, **adapters))


def _check_lora(t: TrainConfig) -> None:
  """LoRA trains the adapters of a frozen LLM; QLoRA also quantizes that frozen LLM."""
  if t.lora_rank and "llm" in t.trainable:
    raise UserError(f"lora_rank {t.lora_rank}: the LLM is frozen under its adapters; name "
                    f"'lora' in trainable instead of 'llm' (got {t.trainable})")
  if (LORA in t.trainable) != bool(t.lora_rank):
    raise UserError(f"trainable names 'lora' exactly when lora_rank > 0 (lora_rank "
                    f"{t.lora_rank}, trainable {t.trainable})")
  if t.quantize is not None and not t.lora_rank:
    raise UserError(f"quantize {t.quantize!r} freezes a quantized LLM: it trains with LoRA "
                    "adapters (QLoRA), so set lora_rank > 0")


def _export(workdir: Path, state, cfg: SphinxConfig | LlamaConfig, exp: Experiment) -> None:
  """`workdir/params_step<N>` for chat, eval and mix (kept if it exists); with several
  processes, all write it together."""
  params = state.params["params"]
  llm_cfg = cfg if isinstance(cfg, LlamaConfig) else cfg.llm
  if llm_cfg.lora_rank:  # the adapters merged: a plain checkpoint for chat, eval and mix
    params = {**params, "llm": lora.merged(params["llm"], llm_cfg)}
    plain = lora.without_adapters(llm_cfg)
    cfg = plain if isinstance(cfg, LlamaConfig) else cfg.replace(llm=plain)
  state_checkpoints.export_params(workdir / f"params_step{int(state.step)}", params, cfg,
                                  exp.data.tokenizer)


def _spans(rows: list[int]) -> str:
  """[0, 1, 2, 5] -> '0-2,5'."""
  spans, start = [], rows[0]
  for a, b in zip(rows, rows[1:] + [None]):
    if b != a + 1:
      spans.append(f"{start}-{a}" if a > start else f"{a}")
      start = b
  return ",".join(spans)


def source_metric_names(exp: Experiment) -> list[str]:
  """'loss/<source>' for each source_id (a repeated label gets its index)."""
  names = exp.data.source_names
  return [f"loss/{n}" if names.count(n) == 1 else f"loss/{n}_{i}" for i, n in enumerate(names)]


def _host_metrics(out: dict, source_names: list[str]) -> dict:
  """Device metrics -> floats, the per-source losses under their names."""
  out = jax.device_get(out)
  by_source = out.pop("loss_by_source")
  return {**{k: float(v) for k, v in out.items()},
          **{name: float(v) for name, v in zip(source_names, by_source)}}


def _finite(metrics: dict) -> dict:
  """NaN / inf as null: metrics.jsonl stays valid JSON (a loss over no rows of a kind is NaN)."""
  return {k: v if np.isfinite(v) else None for k, v in metrics.items()}


class _Preemption:
  """SIGTERM sets a flag; the loop checkpoints after the current step and stops."""

  def __init__(self):
    self.requested = False
    self.previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, *_):
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self.previous)


def train(exp: Experiment, resume: bool = False, label: str = "train",
          resume_with_changes: tuple[str, ...] = ()) -> dict:
  """Run `exp` (`label` names it on the progress bar); returns the last step's metrics.
  `resume_with_changes` names config fields a resumed run may change (train.run_config)."""
  workdir = Path(exp.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  main = jax.process_index() == 0  # holds the lock; others share its workdir
  with workdir_lock.locked(workdir) if main else contextlib.nullcontext():
    return _train(exp, workdir, resume, label, resume_with_changes)


@dataclasses.dataclass(frozen=True)
class RunSetup:
  """What a run computes with, built without allocating anything: shared by `train` and the
  ahead-of-time compile (sphinx_jax.aot), so both compile the same step."""

  cfg: SphinxConfig | LlamaConfig
  mesh: Mesh
  tx: optax.GradientTransformation
  abstract: train_step.TrainState  # ShapeDtypeStructs carrying their shardings
  state_shardings: train_step.TrainState
  source_names: list[str]


def setup(exp: Experiment, devices=None) -> RunSetup:
  """The model config, mesh over `devices` (default: all), optimizer and abstract state."""
  t = exp.train
  cfg = model_config(t)
  llm = cfg if isinstance(cfg, LlamaConfig) else cfg.llm
  if llm.attention == "cudnn" and exp.data.pack > 1:
    raise UserError(f"data.pack {exp.data.pack} packs several samples per row; the 'cudnn' "
                    "attention kernel takes one per row: use attention 'xla' or 'splash', or "
                    "pack 1")
  mesh = sharding.make_mesh(t.mesh, devices)
  tx = optimizer.make(t.optim, t.steps)
  abstract, state_shardings = train_step.abstract_state(cfg, tx, t.trainable, mesh, t.quantize)
  return RunSetup(cfg, mesh, tx, abstract, state_shardings, source_metric_names(exp))


def step_function(run: RunSetup, t: TrainConfig, batch_shardings: dict):
  """The jitted, donated, sharded train step of the run."""
  return train_step.jit_train_step(
      train_step.make_train_step(run.cfg, run.tx, t.trainable, t.micro_batches,
                                 t.loss_weighting, len(run.source_names), t.loss_chunk),
      run.state_shardings, batch_shardings, run.mesh)


def _train(exp: Experiment, workdir: Path, resume: bool, label: str,
           resume_with_changes: tuple[str, ...]) -> dict:
  t = exp.train
  run = setup(exp)
  cfg, mesh, abstract = run.cfg, run.mesh, run.abstract
  ckpts = state_checkpoints.Checkpoints(workdir / "checkpoints", t.checkpoint_every,
                                    t.keep_checkpoints)
  has_checkpoints = ckpts.latest_step() is not None
  if has_checkpoints and not resume:
    raise UserError(f"{workdir}: holds checkpoints up to step {ckpts.latest_step()}; pass "
                     "--resume to continue that run, or use a new workdir")
  if has_checkpoints:
    run_config.check_resume(workdir, exp, resume_with_changes)
  if jax.process_index() == 0:
    run_config.save(workdir, exp)
  data_state = None
  if has_checkpoints:
    state, data_state = ckpts.restore_newest(abstract)
    log.info("resumed from step %d", int(state.step))
  else:
    params = None
    if t.init_from:  # the stored weights; LoRA adapters start fresh
      base = optimizer.split(abstract.params["params"], (LORA,))[1]
      params = {"params": params_io.load(t.init_from, quantization.float_abstract(base),
                                         t.quantize)}
    state = train_step.init_state(cfg, run.tx, t.trainable, run.state_shardings, t.seed, params,
                                  t.quantize)
  start = int(state.step)
  if start >= t.steps:  # finished earlier; the export may not have been written then
    _export(workdir, state, cfg, exp)
    return {}

  skips = SkipLog()
  data_config = exp.data.for_model(cfg)
  shapes = pipeline.batch_shapes(data_config)
  n_rows = shapes["tokens"].shape[0]
  rows = sharding.process_rows(n_rows, mesh)  # this process reads and decodes only these
  data = pipeline.batches(data_config, skips, rows)
  if data_state is not None:
    data.set_state(data_state)
  first = next(data)
  source_names = run.source_names
  step_fn = step_function(run, t, sharding.batch_shardings(shapes, mesh))
  schedule = jax.jit(optimizer.schedule(t.optim, t.steps))  # logged per step: one program
  flops = step_flops(cfg, abstract.params["params"], shapes)
  peak = t.peak_flops or measured_peak_flops()
  is_main = jax.process_index() == 0
  writer = SummaryWriter(str(workdir / "tensorboard")) if is_main else None
  metrics_file = open(workdir / "metrics.jsonl", "a") if is_main else None
  preemption = _Preemption()
  metrics, last_read = {}, time.perf_counter()

  def record(step: int, out) -> None:
    """Read step `step`'s metrics (waiting for it), stop on divergence, log them."""
    nonlocal metrics, last_read
    out = _host_metrics(out, source_names)
    now = time.perf_counter()
    seconds, last_read = now - last_read, now  # between reads: the step's share of wall time
    if not np.isfinite(out["loss"]) or not np.isfinite(out["grad_norm"]):
      ckpts.wait()  # every checkpoint of this run is of a finite state, checksummed
      raise Diverged(f"step {step + 1}: loss {out['loss']}, grad norm {out['grad_norm']}; "
                     f"stopping. The newest verified checkpoint is step "
                     f"{ckpts.latest_step()} in {workdir / 'checkpoints'}")
    metrics = {"step": step + 1, **out, "lr": float(schedule(step)),
               "step_time": seconds, "tokens_per_s": out["tokens"] / seconds,
               "mfu": flops / seconds / (peak * jax.device_count()),
               "skipped_records": len(skips)}
    if is_main:
      metrics_file.write(json.dumps(_finite(metrics)) + "\n")
      metrics_file.flush()
      if (step + 1) % t.log_every == 0 or step + 1 == t.steps:
        for name, value in metrics.items():
          if name != "step" and np.isfinite(value):
            writer.add_scalar(f"train/{name}", value, step + 1)
      bar.set_postfix(loss=f"{out['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
      bar.update(1)

  # The host never waits on the device: step N+1 is dispatched, and batch N+2 read, collated and
  # transferred, before step N's metrics are read. A checkpoint step reads its own metrics first,
  # so no non-finite state is ever saved (its state is donated to the next step).
  try:
    with sharding.use_mesh(mesh), tqdm(total=t.steps, initial=start, disable=not is_main,
                                       desc=label, dynamic_ncols=True) as bar:
      put = functools.partial(sharding.put_rows, rows=rows, n_rows=n_rows, mesh=mesh)
      batch, data_state, unread = put(first), data.get_state(), None
      for step in range(start, t.steps):
        state, out = step_fn(state, batch)
        saved_data = data_state  # the iterator right after this step's batch
        last = step + 1 == t.steps
        if not last:
          batch = put(next(data))
          data_state = data.get_state()
        if unread is not None:
          record(*unread)
        unread = (step, out)
        stop = preemption.requested or last
        if stop or ckpts.due(step + 1):
          record(*unread)
          unread = None
          ckpts.save(step + 1, state, saved_data, force=stop)
        if preemption.requested:
          log.warning("SIGTERM: checkpointed step %d, stopping", step + 1)
          break
    ckpts.wait()
    if not preemption.requested:
      _export(workdir, state, cfg, exp)
  finally:
    preemption.restore()
    ckpts.close()
    if is_main:
      metrics_file.close()
      writer.close()
    if len(skips) or skips.notes:
      log.warning("data: %s", skips.summary())
    log.info("data: process %d read rows %s of each %d-row batch: %d records decoded for %d "
             "batches",
             jax.process_index(), _spans(rows), n_rows, data.decoded, data.batches_read)
    if data.config.pack > 1:
      log.info("data: %d samples packed into rows (pack %d), %d dropped for lack of room",
               data.packed, data.config.pack, data.overflow)
  return metrics
