"""The run's config, saved in the workdir at its first step, so `--resume` continues the same run.

A resumed run whose config changes what it computes (model, trainable set, batch, sequence
length, dtypes, steps and schedule, data) is refused with the changed fields listed, unless they
are named in `allowed` (`--resume-with-changes`); the caller then saves the new config.
Fields that change only how the run is watched or laid out may differ freely: CHANGEABLE.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from sphinx_jax.util.errors import UserError
from sphinx_jax.util.files import write_atomic

log = logging.getLogger(__name__)
FILE = "run_config.json"
# Logging, checkpoint cadence, device layout, kernels and reader threads: the same run, computed
# alike.
CHANGEABLE = ("workdir", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
              "train.peak_flops", "train.mesh", "train.loss_chunk", "train.attention",
              "data.threads",
              "data.strict")


def to_json(config: Any) -> Any:
  """A dataclass tree as JSON: each dataclass an object with its type name under `type`."""
  if dataclasses.is_dataclass(config):
    return {"type": type(config).__name__,
            **{f.name: to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}}
  if isinstance(config, (list, tuple)):
    return [to_json(x) for x in config]
  if isinstance(config, dict):
    return {str(k): to_json(v) for k, v in config.items()}
  if isinstance(config, os.PathLike):
    return str(config)
  return config


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'train.optim.lr': 0.001, 'data.sources.0.path': ...} of a JSON tree."""
  if isinstance(tree, dict):
    items = tree.items()
  elif isinstance(tree, list):
    items = enumerate(tree)
  else:
    return {prefix: tree}
  out = {}
  for key, value in items:
    out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
  return out or {prefix: tree}


def changed_fields(saved: Any, current: Any) -> list[str]:
  """Fields (dotted) whose values differ, those in CHANGEABLE left out."""
  a, b = flat(saved), flat(current)
  return [k for k in sorted(a.keys() | b.keys())
          if a.get(k, "<absent>") != b.get(k, "<absent>") and not _matches(k, CHANGEABLE)]


def _matches(key: str, names) -> bool:
  return any(key == n or key.startswith(n + ".") for n in names)


def save(workdir: Path, config: Any) -> None:
  write_atomic(Path(workdir) / FILE, json.dumps(to_json(config), indent=1) + "\n")


def load(workdir: Path) -> Any | None:
  path = Path(workdir) / FILE
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: unreadable run config ({e}); restore it or start a new "
                     "workdir") from None


def check_resume(workdir: Path, config: Any, allowed: tuple[str, ...] = ()) -> None:
  """Refuse to resume `workdir` with a config that computes something else (see module doc)."""
  saved = load(workdir)
  if saved is None:
    log.warning("%s: no %s (a run from before it existed); resuming unchecked", workdir, FILE)
    return
  current = to_json(config)
  changed = changed_fields(saved, current)
  refused = [k for k in changed if not _matches(k, allowed)]
  if refused:
    was, now = flat(saved), flat(current)
    shown = "; ".join(f"{k}: {was.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
                      for k in refused[:5])
    more = f" (+{len(refused) - 5} more)" if len(refused) > 5 else ""
    raise UserError(f"{Path(workdir) / FILE}: the resumed config changes what the run computes: "
                     f"{shown}{more}. To accept, pass --resume-with-changes "
                     f"{','.join(refused)} (a prefix such as 'data' names all its fields), "
                     "or use a new workdir")
  if changed:
    log.warning("resuming with changes: %s", ", ".join(changed))
