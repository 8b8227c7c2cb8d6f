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
  """A submitted request: `pieces()` yields its answer's text as it is decoded, then `answer`
  holds the final text (cut at the stop string, stripped); `result()` waits for it. An error
  while decoding is raised from either."""

  def __init__(self, request: Request):
    self.request = request
    self.answer: str | None = None
    self._pieces: queue.Queue = queue.Queue()

  def pieces(self) -> Iterator[str]:
    while (item := self._pieces.get()) is not _END:
      if isinstance(item, BaseException):
        raise item
      yield item

  def result(self) -> str:
    for _ in self.pieces():
      pass
    return self.answer

  def _put(self, item) -> None:
    self._pieces.put(item)


class Batcher:
  """Serves `model` from a worker thread; `submit` is safe from any thread."""

  def __init__(self, model: Sphinx, *, max_batch: int = 8, max_waiting: int = 32,
               window_s: float = 0.05):
    if max_batch < 1 or max_waiting < 1:
      raise UserError(f"max_batch {max_batch} and max_waiting {max_waiting} must be >= 1")
    self.model, self.max_batch, self.max_waiting, self.window_s = (
        model, max_batch, max_waiting, window_s)
    self._waiting: list[Ticket] = []
    self._wake = threading.Condition()
    self.batch_sizes: list[int] = []  # one entry per decoded batch (for logs and tests)
    threading.Thread(target=self._work, name="sphinx-batcher", daemon=True).start()

  def submit(self, request: Request) -> Ticket:
    """Queue `request`; Busy when `max_waiting` requests already wait, ContextFull when its
    prompt leaves no room for an answer (checked here, so one bad turn fails alone)."""
    room = self.model.chat_room(list(request.frames), request.question, request.history)
    if request.max_new_tokens is not None:
      request = dataclasses.replace(request, max_new_tokens=min(request.max_new_tokens, room))
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
        self._decode(batch)
        log.info("decoded %d request(s) together in %.2f s", len(batch),
                 time.perf_counter() - start)
      except Exception as e:  # noqa: BLE001 - every waiting user hears of it; a bug is logged
        if not isinstance(e, UserError):
          log.exception("decoding a batch of %d failed", len(batch))
        for ticket in batch:
          ticket._put(e)
      finally:
        for ticket in batch:
          ticket._put(_END)

  def _decode(self, batch: Sequence[Ticket]) -> None:
    requests = [t.request for t in batch]
    first = requests[0]
    answers = self.model.chat_batch(
        [list(r.frames) or None for r in requests], [r.question for r in requests],
        [r.history for r in requests], max_new_tokens=[r.max_new_tokens for r in requests],
        temperature=first.temperature, top_p=first.top_p, seed=first.seed,
        on_text=lambda row, piece: batch[row]._put(piece))
    for ticket, answer in zip(batch, answers):
      ticket.answer = answer


def warm_up(model: Sphinx, max_batch: int, max_new_tokens: int) -> list[int]:
  """Compile the batched decode for every row bucket (1, 2, 4, ... up to max_batch) of a
  one-image turn, so the first users do not wait for the compiler. The row counts compiled."""
  rows = sorted({1 << (n - 1).bit_length() for n in range(1, max_batch + 1)})
  image = Image.new("RGB", (64, 64), (128, 128, 128))
  for n in rows:
    model.chat_batch([image] * n, ["Describe the image."] * n, max_new_tokens=max_new_tokens,
                     on_text=lambda row, piece: None)  # streaming, as the batcher decodes
  return rows
