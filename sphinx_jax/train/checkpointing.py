"""Train checkpoints (Orbax CheckpointManager, async, keep-N): the train state and the data
iterator's state side by side, so `--resume` continues exactly; and the params-only export."""
from __future__ import annotations

import json
from pathlib import Path

import orbax.checkpoint as ocp

from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import SphinxConfig


class Checkpoints:
  def __init__(self, directory: str | Path, every: int, keep: int):
    self.manager = ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=True),
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves (asynchronously) when `step` is on the interval, or when forced."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(_jsonable(data_state))),
        force=force)

  def restore(self, abstract_state, step: int | None = None):
    """(state restored straight into the abstract state's shardings, data iterator state)."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _jsonable(data_state: dict) -> dict:
  json.dumps(data_state)  # fail here, naming nothing half-written, if the iterator state is odd
  return data_state


def export_params(dst: str | Path, params: dict, cfg: SphinxConfig,
                  tokenizer: str | Path | None) -> Path | None:
  """A params-only checkpoint (the layout `launch convert` writes), for inference and mixing.
  An existing `dst` is kept (a finished run resumed again)."""
  if Path(dst).exists():
    return None
  return params_io.write(dst, params_io.disk_parts(params), {"model": "sphinx", **cfg.to_dict()},
                         tokenizer)
