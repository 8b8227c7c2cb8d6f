"""Writes that appear complete or not at all: a crash, a kill or an exception leaves the old
file (or nothing), never half of the new one."""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """`text` into `path` through a hidden sibling renamed over it."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def building(dst: str | os.PathLike) -> Iterator[Path]:
  """A fresh hidden sibling directory of `dst` to write into; renamed to `dst` when the block
  ends, removed when it raises (KeyboardInterrupt included). `dst` must not exist."""
  dst = Path(dst)
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.parent / f".{dst.name}.partial-{uuid.uuid4().hex[:8]}"
  tmp.mkdir()
  try:
    yield tmp
    tmp.rename(dst)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
