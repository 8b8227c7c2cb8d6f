"""One run per workdir: a lock file holding the owner's pid, host and start time.

A second run in the same workdir is refused (two runs would interleave metrics.jsonl and race in
Orbax). A lock left by a process that no longer runs on this host is taken over with a warning;
a lock of another host cannot be checked, so it is refused with the command to remove it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from sphinx_jax.util.errors import UserError

log = logging.getLogger(__name__)
FILE = ".lock"


class WorkdirLocked(UserError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _create(path: Path) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
  return True


def _holder(path: Path) -> dict | None:
  try:
    holder = json.loads(path.read_text())
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
  except (OSError, json.JSONDecodeError, UnicodeDecodeError):
    return None


def acquire(workdir: Path) -> Path:
  """Take `workdir`'s lock (see module doc); returns the lock file."""
  path = Path(workdir) / FILE
  if _create(path):
    return path
  holder = _holder(path)
  here = socket.gethostname()
  if holder is not None and (holder.get("host") != here or _alive(holder["pid"])):
    where = f"pid {holder['pid']} on {holder.get('host')} since {holder.get('started')}"
    raise WorkdirLocked(f"{workdir}: in use by another run ({where}); wait for it to finish, or "
                        f"if it is gone, remove {path}")
  log.warning("%s: taking over a stale lock (%s)", path,
              f"pid {holder['pid']} no longer runs" if holder else "unreadable")
  path.unlink(missing_ok=True)
  if not _create(path):
    raise WorkdirLocked(f"{workdir}: another run took the lock first ({path})")
  return path


@contextlib.contextmanager
def locked(workdir: Path):
  """Hold `workdir`'s lock for the body; released however the body ends."""
  path = acquire(workdir)
  try:
    yield path
  finally:
    path.unlink(missing_ok=True)
