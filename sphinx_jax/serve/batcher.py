"""Concurrent chat requests decoded together: one worker thread, one batched generate at a time.

Requests wait in a bounded queue; the worker takes the oldest, waits `window_s` for more, and
decodes up to `max_batch` of those with the same sampling settings in one `Sphinx.chat_batch`
call (rows of different lengths and budgets; greedy answers equal each request decoded alone).
Each row's text streams back to its own `Ticket` while the batch decodes. A request arriving
mid-batch waits for the next batch: the decode loop is one compiled `while_loop`, so rows do not
join it in flight.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Iterator, Sequence

from PIL import Image

from sphinx_jax.inference.sphinx_model import Sphinx
from sphinx_jax.models.batch import power_of_two
from sphinx_jax.util.errors import UserError

log = logging.getLogger(__name__)


class Busy(UserError):
  """The waiting queue is full: the request is refused, not queued."""


@dataclasses.dataclass(frozen=True)
class Request:
  """One chat turn: frames (none, one image, several images or video frames), the question,
  the earlier turns, and how to decode it (`max_new_tokens` None: what the context leaves, at
  most CHAT_NEW_TOKENS)."""

  frames: tuple[Image.Image, ...]
  question: str
  history: tuple[tuple[str, str], ...] = ()
  max_new_tokens: int | None = None
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0

  @property
  def sampling(self) -> tuple[float, float]:
    return (self.temperature, self.top_p) if self.temperature > 0 else (0.0, 1.0)


_END = object()


class Ticket:
  """A submitted request: `pieces()` yields its answer's text as it is decoded; when decoding
  ends, `answer` holds the final text (cut at the stop string, stripped). `result()` waits for
  it, whether or not the pieces were read. An error while decoding is raised from either."""

  def __init__(self, request: Request):
    self.request = request
    self.answer: str | None = None
    self._error: Exception | None = None
    self._pieces: queue.Queue = queue.Queue()
    self._done = threading.Event()

  def pieces(self) -> Iterator[str]:
    while (item := self._pieces.get()) is not _END:
      yield item
    self._raise()

  def result(self, timeout: float | None = None) -> str:
    if not self._done.wait(timeout):
      raise TimeoutError(f"no answer within {timeout} s")
    self._raise()
    return self.answer

  def _raise(self) -> None:
    if self._error is not None:
      raise self._error

  def _finish(self, answer: str | None, error: Exception | None) -> None:
    self.answer, self._error = answer, error
    self._done.set()
    self._pieces.put(_END)


class Batcher:
  """Serves `model` from a worker thread; `submit` is safe from any thread."""

  def __init__(self, model: Sphinx, *, max_batch: int = 8, max_waiting: int = 32,
               max_new_tokens: int = 256, window_s: float = 0.05):
    if min(max_batch, max_waiting, max_new_tokens) < 1:
      raise UserError(f"max_batch {max_batch}, max_waiting {max_waiting} and max_new_tokens "
                       f"{max_new_tokens} must be >= 1")
    self.model, self.max_batch, self.max_waiting, self.window_s = (
        model, max_batch, max_waiting, window_s)
    self.max_new_tokens = max_new_tokens
    # one decode loop length for every batch: rows stop at their own budgets
    self.steps = power_of_two(max_new_tokens)
    self._waiting: list[Ticket] = []
    self._wake = threading.Condition()
    self.batch_sizes: list[int] = []  # one entry per decoded batch (for logs and tests)
    threading.Thread(target=self._work, name="sphinx-batcher", daemon=True).start()

  def submit(self, request: Request) -> Ticket:
    """Queue `request`; Busy when `max_waiting` requests already wait, ContextFull when its
    prompt leaves no room for an answer, UserError for a budget below 1 (checked here, so one
    bad turn fails alone). The budget is capped at `max_new_tokens` and at the room."""
    room = self.model.chat_room(list(request.frames), request.question, request.history)
    asked = self.max_new_tokens if request.max_new_tokens is None else request.max_new_tokens
    if asked < 1:
      raise UserError(f"max_new_tokens {asked}: must be at least 1")
    request = dataclasses.replace(request, max_new_tokens=min(asked, self.max_new_tokens, room))
    ticket = Ticket(request)
    with self._wake:
      if len(self._waiting) >= self.max_waiting:
        raise Busy(f"the server is busy: {len(self._waiting)} requests are waiting (the limit); "
                   "try again in a moment")
      self._waiting.append(ticket)
      self._wake.notify()
    return ticket

  def _next_batch(self) -> list[Ticket]:
    """The oldest waiting request and, after `window_s`, up to max_batch - 1 more that sample
    the same way, in arrival order."""
    with self._wake:
      while not self._waiting:
        self._wake.wait()
    time.sleep(self.window_s)
    with self._wake:
      key = self._waiting[0].request.sampling
      batch = [t for t in self._waiting if t.request.sampling == key][:self.max_batch]
      self._waiting = [t for t in self._waiting if t not in batch]
    return batch

  def _work(self) -> None:
    while True:
      batch = self._next_batch()
      self.batch_sizes.append(len(batch))
      start = time.perf_counter()
      try:
        answers = self._decode(batch)
      except Exception as e:  # noqa: BLE001 - every waiting user hears of it; a bug is logged
        if not isinstance(e, UserError):
          log.exception("decoding a batch of %d failed", len(batch))
        for ticket in batch:
          ticket._finish(None, e)
        continue
      log.info("decoded %d request(s) together in %.2f s", len(batch),
               time.perf_counter() - start)
      for ticket, answer in zip(batch, answers):
        ticket._finish(answer, None)

  def _decode(self, batch: Sequence[Ticket]) -> list[str]:
    requests = [t.request for t in batch]
    first = requests[0]
    return self.model.chat_batch(
        [list(r.frames) or None for r in requests], [r.question for r in requests],
        [r.history for r in requests], max_new_tokens=[r.max_new_tokens for r in requests],
        temperature=first.temperature, top_p=first.top_p, seed=first.seed, steps=self.steps,
        on_text=lambda row, piece: batch[row]._pieces.put(piece))


def warm_up(batcher: Batcher) -> list[int]:
  """Compile the batcher's decode for every row bucket (1, 2, 4, ... up to max_batch) of a
  one-image turn, so the first users do not wait for the compiler. The row counts compiled."""
  rows = sorted({power_of_two(n) for n in range(1, batcher.max_batch + 1)})
  image = Image.new("RGB", (64, 64), (128, 128, 128))
  for n in rows:
    batcher.model.chat_batch([image] * n, ["Describe the image."] * n, max_new_tokens=1,
                             steps=batcher.steps,
                             on_text=lambda row, piece: None)  # streaming, as the batcher does
  return rows
