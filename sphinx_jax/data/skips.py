"""Bad records: an error that names the file and record, and the log that counts skipped ones.

A pipeline never drops a record silently: a record that cannot become a sample raises BadRecord;
the pipeline either re-raises it (strict) or turns it into a `Skipped` marker that the consumer
logs and filters out, so the log is complete and identical however many threads read the data.
"""
from __future__ import annotations

import collections
import dataclasses


class BadRecord(ValueError):
  """A record that cannot become a sample: `file`, `record` (line / key / index) and why."""

  def __init__(self, file: str, record: str, reason: str):
    super().__init__(f"{file} [{record}]: {reason}")
    self.file, self.record, self.reason = str(file), str(record), reason


@dataclasses.dataclass(frozen=True)
class Skipped:
  file: str
  record: str
  reason: str


class SkipLog:
  """Skipped records, each counted once however often an epoch revisits it."""

  def __init__(self):
    self.records: dict[tuple[str, str], str] = {}

  def keep(self, item) -> bool:
    """grain filter predicate: logs and drops `Skipped` markers, keeps everything else."""
    if isinstance(item, Skipped):
      self.records.setdefault((item.file, item.record), item.reason)
      return False
    return True

  def __len__(self) -> int:
    return len(self.records)

  def summary(self) -> str:
    if not self.records:
      return "skipped records: none"
    by_file = collections.Counter(file for file, _ in self.records)
    lines = [f"skipped records: {len(self.records)} "
             f"({', '.join(f'{n} in {f}' for f, n in by_file.items())})"]
    lines += [f"  {file} [{record}]: {reason}" for (file, record), reason in self.records.items()]
    return "\n".join(lines)
