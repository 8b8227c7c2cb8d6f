"""Train-state checkpoints for resuming (Orbax CheckpointManager, async, keep-N; not the params
checkpoints users load, which are checkpoints/params_io): the train state, the data
iterator's state and the state's per-array checksums side by side, so `--resume` continues
exactly and never from a corrupt step; and the params-only export."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from sphinx_jax.checkpoints import checksums, params_io
from sphinx_jax.configs import LlamaConfig, SphinxConfig, checkpoint_config

log = logging.getLogger(__name__)
CORRUPT_DIR = "checkpoints_corrupt"  # beside the checkpoints: steps that did not restore


class Checkpoints:
  def __init__(self, directory: str | Path, every: int, keep: int):
    self.directory = Path(directory).absolute()
    if not params_io.replica_parallel_saving():  # the manager's handler, as params_io's saves
      ocp.type_handlers.register_type_handler(
          jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=True),
        item_names=("state", "data", "checksums"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def due(self, step: int) -> bool:
    """Whether `save(step, ...)` would save without being forced."""
    return self.manager.should_save(step)

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves (asynchronously) when `step` is on the interval, or when forced."""
    if not (force or self.due(step)):
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_jsonable(data_state)),
        checksums=ocp.args.JsonSave(checksums.of_tree(state))), force=force)

  def restore(self, abstract_state, step: int):
    """(state restored straight into the abstract state's shardings, data iterator state), its
    checksums verified; a ChecksumError names the step and the array."""
    items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    verified = (self.directory / str(step) / "checksums").is_dir()
    if verified:
      items["checksums"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    if verified:
      checksums.verify(checksums.of_tree(restored["state"]), restored["checksums"],
                       f"{self.directory / str(step)}")
    else:
      log.warning("%s: step %d has no checksums (written before they existed); not verified",
                  self.directory, step)
    return restored["state"], restored["data"]

  def restore_newest(self, abstract_state):
    """(state, data state) of the newest step that restores and verifies. Steps that do not
    (truncated, corrupt, empty) are moved to CORRUPT_DIR with a warning saying why, so the run
    can save those steps again; an error lists every reason when none restores."""
    reasons = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self.restore(abstract_state, step)
      except Exception as e:  # noqa: BLE001 - any failure to restore makes the step unusable
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        reasons.append(f"step {step}: {reason}")
        moved = self._set_aside(step)
        log.warning("checkpoint step %d does not restore (%s); moved to %s, trying the previous "
                    "one", step, reason[:500], moved)
    raise params_io.CheckpointError(f"{self.directory}: no checkpoint restores ("
                                    + "; ".join(r[:300] for r in reasons) + ")")

  def _set_aside(self, step: int) -> Path:
    dst = self.directory.parent / CORRUPT_DIR / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:
      dst.parent.mkdir(exist_ok=True)
      shutil.move(str(self.directory / str(step)), dst)
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.reload()
    return dst

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _jsonable(data_state: dict) -> dict:
  json.dumps(data_state)  # fail here, naming nothing half-written, if the iterator state is odd
  return data_state


def export_params(dst: str | Path, params: dict, cfg: SphinxConfig | LlamaConfig,
                  tokenizer: str | Path | None) -> Path | None:
  """A params-only checkpoint (the layout `launch convert` writes: a SPHINX or, for a text-only
  run, an LLM checkpoint), for inference and mixing. An existing `dst` is kept (a finished run
  resumed again)."""
  if Path(dst).exists():
    return None
  return params_io.write(dst, params_io.disk_parts(params), checkpoint_config(cfg),
                         tokenizer)
