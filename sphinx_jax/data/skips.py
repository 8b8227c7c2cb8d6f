"""Bad records: an error that names the file and record, and the log that counts skipped ones.

A pipeline never drops a record silently: a record that cannot become a sample raises BadRecord;
the pipeline either re-raises it (strict) or turns it into a `Skipped` marker that the consumer
logs and filters out, so the log is complete and identical however many threads read the data.
Records that do train but carry `notes` (e.g. `<image>` markers without an image) are counted
the same way, by the consumer.
"""
from __future__ import annotations

import collections
import dataclasses

from sphinx_jax.util.errors import UserError


class BadRecord(UserError):
  """A record that cannot become a sample: `file`, `record` (line / key / index) and why."""

  def __init__(self, file: str, record: str, reason: str):
    super().__init__(f"{file} [{record}]: {reason}")
    self.file, self.record, self.reason = str(file), str(record), reason


@dataclasses.dataclass(frozen=True)
class Skipped:
  file: str
  record: str
  reason: str


NOTED_SHOWN = 3  # records named per note in the summary


class SkipLog:
  """Skipped records (`len`: how many; the training loop's `skipped_records`) and noted ones
  (`notes`: note -> records), each counted once however often an epoch revisits it."""

  def __init__(self):
    self.records: dict[tuple[str, str], str] = {}
    self.notes: dict[str, dict[str, None]] = {}  # note -> records, in first-seen order

  def keep(self, item) -> bool:
    """grain filter predicate: logs and drops `Skipped` markers, keeps everything else (and
    counts the notes a kept sample carries)."""
    if isinstance(item, Skipped):
      self.records.setdefault((item.file, item.record), item.reason)
      return False
    for note in getattr(item, "notes", ()):
      self.notes.setdefault(note, {})[item.record] = None
    return True

  def __len__(self) -> int:
    return len(self.records)

  def noted(self, note: str) -> int:
    """How many kept records carried `note`."""
    return len(self.notes.get(note, ()))

  def summary(self) -> str:
    lines = [self._skipped()]
    for note, records in self.notes.items():
      first = ", ".join(list(records)[:NOTED_SHOWN])
      more = ", ..." if len(records) > NOTED_SHOWN else ""
      lines.append(f"{len(records)} records had {note}: {first}{more}")
    return "\n".join(lines)

  def _skipped(self) -> str:
    if not self.records:
      return "skipped records: none"
    by_file = collections.Counter(file for file, _ in self.records)
    lines = [f"skipped records: {len(self.records)} "
             f"({', '.join(f'{n} in {f}' for f, n in by_file.items())})"]
    lines += [f"  {file} [{record}]: {reason}" for (file, record), reason in self.records.items()]
    return "\n".join(lines)
