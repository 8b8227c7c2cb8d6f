"""The files a conversion read, with their sizes and sha256, in the output's `source.json`: a
checkpoint says exactly what it came from.

`source.json` sits beside config.json, not inside it: every reader parses config.json strictly
(`SphinxConfig.from_dict` refuses unknown fields, training's `init_from` included). The files are
hashed in a background thread while the conversion reads them through mmap: the page cache
serves whichever read comes second, so a file that fits in RAM is read from disk once, and the
hashing (about 1 s per GiB on one core) overlaps the conversion instead of adding to it.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.util.files import building

SOURCE_FILE = "source.json"
_CHUNK = 8 << 20


def _file_record(path: Path, root: Path, stop: threading.Event) -> dict:
  """{path (relative to `root`), bytes, sha256} of one file, read in chunks (cut short once
  `stop` is set: the conversion failed and the record will not be used)."""
  digest, size = hashlib.sha256(), 0
  try:
    with open(path, "rb") as f:
      while (chunk := f.read(_CHUNK)) and not stop.is_set():
        digest.update(chunk)
        size += len(chunk)
  except OSError as e:
    raise ConversionError(f"{path}: cannot read to hash ({e})") from None
  return {"path": os.path.relpath(path, root), "bytes": size, "sha256": digest.hexdigest()}


def write(dst: str | os.PathLike, parts: Iterable[dict], config: dict,
          tokenizer: Path | None, fmt: str, src: Path, files: Sequence[Path],
          quantize: str | None = None) -> Path:
  """`params_io.write` plus `source.json` for `files` (and the tokenizer), hashed while `parts`
  are converted; `quantize`: the LLM's matmul weights stored quantized by that scheme
  (params_io.quantized_parts). Written in a hidden sibling and renamed: `dst` appears complete
  or not at all."""
  dst = Path(os.path.abspath(dst))
  if dst.exists():
    raise params_io.CheckpointError(f"{dst}: already exists; refusing to overwrite")
  files = [*files, *([tokenizer] if tokenizer is not None else [])]
  stop = threading.Event()
  with building(dst) as tmp, ThreadPoolExecutor(1, thread_name_prefix="hash-sources") as pool:
    hashed = pool.submit(lambda: [_file_record(f, src, stop) for f in files])
    try:
      if quantize is not None:
        config = {**config, params_io.QUANTIZATION_KEY: quantize}
      params_io.write_into(tmp, params_io.quantized_parts(parts, quantize), config, tokenizer)
      source = {"format": fmt, "src": str(src.absolute()), "files": hashed.result()}
    finally:
      stop.set()  # on failure: no minutes of hashing after the error
    (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
  return dst
