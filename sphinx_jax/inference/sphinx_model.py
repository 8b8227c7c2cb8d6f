"""`Sphinx`: a SPHINX checkpoint behind the Python API (preprocess, logits, generation, chat).

The compiled calls every caller shares live here: `forward` (logits), `loss_sums` (the training
loss of a batch), `encode_images` and `generate` (decoding a batch of prompts) take host batches
(models.batch.pack) and place them on the mesh by the rules table (sharding.put_batch); chat,
evaluation and the recipe's report use them instead of jitting the network themselves.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import CHECKPOINT_KEYS, SphinxConfig
from sphinx_jax.data import image as image_ops
from sphinx_jax.data.sample import image_after_bos, prompt, tiled
from sphinx_jax.data.templates import STOP, conversation_prompt
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.inference.generate import generate, streaming, trim
from sphinx_jax.inference.language_model import eos_of, load_sharded
from sphinx_jax.inference.sampling import Sampling
from sphinx_jax.inference.segment import SegmentAnything, Segmentation, segment_answer
from sphinx_jax.models import batch as batches
from sphinx_jax.models.batch import Prompt
from sphinx_jax.models.llama import init_cache
from sphinx_jax.models.loss import loss_sums
from sphinx_jax.models.sphinx import SphinxNet, init_params
from sphinx_jax.models.vision.resize import DEFAULT_ARITHMETIC
from sphinx_jax.util.errors import UserError

CHAT_NEW_TOKENS = 512  # an answer's budget when none is given (or what the context leaves)
Media = Image.Image | Sequence[Image.Image] | None  # a chat turn's images (several: frames)


class ContextFull(UserError):
  """The prompt (image and history included) leaves too little of max_seq_len for the answer."""


class Sphinx:
  """A SPHINX model: `config` (SphinxConfig), `params` (pytree), optional `tokenizer`."""

  def __init__(self, config: SphinxConfig, params, tokenizer: Tokenizer | None = None,
               mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.params = params
    self.tokenizer = tokenizer
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    self.plan = image_ops.VIEW_PLANS[config.view_plan]
    if self.plan.num_views != config.n_views:
      raise UserError(f"view plan {config.view_plan!r} gives {self.plan.num_views} views, "
                       f"the config says {config.n_views}")

  @classmethod
  def from_pretrained(cls, ckpt_dir: str | os.PathLike, *, dtype: str | None = None,
                      quantize: str | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> "Sphinx":
    """Load a checkpoint written by `launch convert accessory` or by training, sharded on `mesh`
    (default: all devices on the fsdp axis). `dtype` overrides the LLM's param/compute dtypes.
    `quantize` ('int8' | 'int4' | 'nf4'): the LLM's matmul weights quantized as they load, the
    towers untouched (a quantized checkpoint loads quantized without it; models.quantization)."""
    config = params_io.read_config(ckpt_dir)
    if config.get("model") != "sphinx":
      raise params_io.CheckpointError(
          f"{ckpt_dir}/config.json: model {config.get('model')!r} is not a SPHINX model")
    try:
      cfg = SphinxConfig.from_dict({k: v for k, v in config.items()
                                    if k not in CHECKPOINT_KEYS})
    except (ValueError, TypeError, AttributeError) as e:  # fields unknown, missing, mistyped
      raise params_io.CheckpointError(f"{ckpt_dir}/config.json: not a SPHINX config ({e})") \
          from None
    if dtype is not None:
      cfg = cfg.replace(llm=cfg.llm.replace(param_dtype=dtype, dtype=dtype))
    mesh = mesh if mesh is not None else sharding.make_mesh()
    params, tokenizer = load_sharded(ckpt_dir, lambda k: init_params(cfg, k), mesh,
                                     quantize=quantize)
    return cls(cfg, params, tokenizer, mesh)

  def preprocess(self, image: Image.Image,
                 arithmetic: str = DEFAULT_ARITHMETIC) -> dict[str, np.ndarray]:
    """The reference transform and view tiling: {'vit': [V, s, s, 3], 'convnext': [V, t, t, 3]}
    NHWC, each stack exactly the pixels that tower sees. As the reference's generate does, the
    square is cast to the model's dtype before the tiling (a bf16 release sees bf16 views); the
    fp16 resizes compute as torch's `arithmetic` kernel ('cuda', where SPHINX runs; 'cpu')."""
    square = image_ops.preprocess(image, self.plan.image_size)
    return tiled(square.astype(self.config.dinov2.dtype), self.plan, arithmetic)

  @property
  def view_shapes(self) -> dict[str, tuple[int, ...]]:
    """Each tower's view stack of one image, [V, s, s, 3]."""
    return {k: (self.config.n_views, s, s, 3) for k, s in self.config.view_sizes.items()}

  def batch(self, prompts: Sequence[Prompt], *, n_rows: int | None = None,
            length: int | None = None, n_images: int | None = None) -> dict:
    """A host batch of `prompts` (models.batch.pack): rows rounded up to the mesh, the length
    bucketed (models.batch.bucketed) unless given."""
    n_rows = sharding.batch_rows(n_rows or len(prompts), self.mesh)
    length = length or batches.bucketed(max(len(p.tokens) for p in prompts))
    if n_images is None:
      n_images = max(len(next(iter(p.images.values()))) if p.images else 0 for p in prompts)
    return batches.pack(prompts, length=length, n_images=n_images, view_shapes=self.view_shapes,
                        n_rows=n_rows)

  def forward(self, batch: dict) -> jax.Array:
    """Logits float32 [B, T, V] of a host batch."""
    with sharding.use_mesh(self.mesh):
      return _forward(self.params, sharding.put_batch(batch, self.mesh), cfg=self.config)

  def loss_sums(self, batch: dict) -> dict:
    """models.loss.loss_sums of a training batch (data.batching.collate), as numpy values."""
    with sharding.use_mesh(self.mesh):
      sums = _loss_sums(self.params, sharding.put_batch(batch, self.mesh), cfg=self.config)
    return {k: np.asarray(v) for k, v in sums.items()}

  def encode_images(self, images: dict) -> np.ndarray:
    """Image tokens float32 [n, tokens_per_image, dim] of view stacks {'vit': [n, V, s, s, 3],
    ...} (what the LLM reads for each image)."""
    n = len(next(iter(images.values())))
    rows = sharding.batch_rows(n, self.mesh)
    padded = {k: np.concatenate([v, np.zeros((rows - n, *v.shape[1:]), v.dtype)])
              for k, v in images.items()}
    with sharding.use_mesh(self.mesh):
      out = _encode(self.params, sharding.put_batch(padded, self.mesh), cfg=self.config)
      return np.asarray(multihost_utils.process_allgather(out, tiled=True)[:n], np.float32)

  def generate(self, batch: dict, max_new_tokens: int | Sequence[int], *,
               sampling: Sampling = Sampling(), seed: int = 0, eos_id: int | None = None,
               stops: tuple[tuple[int, ...], ...] = (), steps: int | None = None,
               on_token: Callable[[int], None] | None = None,
               on_tokens: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """New tokens [B, steps] after each row of a host prompt batch, DONE after a row stopped
    (`inference.generate.trim` cuts a row). `max_new_tokens`: one budget for every row, or one
    per prompt, each row stopping at its own. `steps`, the loop's compiled length: by default
    the int budget, or the largest of several rounded up to a power of two (so interactive
    budgets share compiled loops). `on_token` streams row 0's tokens, `on_tokens` every row's
    ([B], DONE where a row is over)."""
    lengths = batches.lengths(batch)
    if np.ndim(max_new_tokens) == 0:
      budgets = np.full(lengths.shape, max_new_tokens, np.int32)
      steps = int(max_new_tokens) if steps is None else steps
    else:
      if not 0 < len(max_new_tokens) <= len(lengths):
        raise UserError(f"{len(max_new_tokens)} budgets for {len(lengths)} rows")
      budgets = np.ones(lengths.shape, np.int32)  # padding rows: one step, never read
      budgets[:len(max_new_tokens)] = max_new_tokens
      steps = batches.power_of_two(int(budgets.max())) if steps is None else steps
    if int(budgets.min()) < 1:
      raise UserError(f"max_new_tokens {int(budgets.min())}: must be at least 1")
    if steps < int(budgets.max()):
      raise UserError(f"max_new_tokens {int(budgets.max())} is longer than the {steps}-step loop")
    if int((lengths + budgets).max()) > self.config.llm.max_seq_len:
      row = int(np.argmax(lengths + budgets))
      raise ContextFull(f"prompt ({int(lengths[row])} positions with image) + max_new_tokens "
                        f"({int(budgets[row])}) exceeds max_seq_len {self.config.llm.max_seq_len}")
    if on_token is not None and on_tokens is not None:
      raise UserError("stream with on_token (row 0) or on_tokens (every row), not both")
    inputs = {k: batch[k] for k in ("tokens", "image_mask", "images") if k in batch}
    sink = on_tokens or (None if on_token is None else _first_row(on_token))
    with sharding.use_mesh(self.mesh), (contextlib.nullcontext() if sink is None
                                        else streaming(sink)):
      out = _generate(self.params, sharding.put_batch(inputs, self.mesh),
                      sharding.put_batch(lengths, self.mesh),
                      sharding.put_batch(budgets, self.mesh), jax.random.key(seed),
                      cfg=self.config, cache_len=batch["tokens"].shape[1] + steps,
                      max_new_tokens=steps, sampling=sampling, eos_id=eos_id,
                      stops=stops, stream=sink is not None)
      return np.asarray(multihost_utils.process_allgather(out, tiled=True))

  def logits(self, pixels: dict | None, token_ids: Sequence[int]) -> np.ndarray:
    """float32 [len(token_ids), vocab]: row i is the distribution of token i+1. With an image,
    its tokens sit between BOS and token 1, and row 0 is read at the end-of-image vector."""
    one = self._prompt(pixels, token_ids)
    logits = multihost_utils.process_allgather(self.forward(self.batch([one])), tiled=True)
    rows = np.flatnonzero(~one.image_mask)
    if pixels is not None:  # BOS's successor is read after the image
      rows[0] += self.config.image_tokens
    return np.asarray(logits[0, rows])

  def generate_ids(self, pixels: dict | None, token_ids: Sequence[int],
                   max_new_tokens: int = 64, *, temperature: float = 0.0, top_p: float = 1.0,
                   top_k: int = 0, seed: int = 0, stop_sequences: Sequence[Sequence[int]] = (),
                   eos_id: int | None = -1,
                   on_token: Callable[[int], None] | None = None) -> list[int]:
    """New token ids after the prompt (EOS / stop sequence excluded); `on_token` streams them."""
    eos_id = eos_of(self.tokenizer) if eos_id == -1 else eos_id
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    out = self.generate(self.batch([self._prompt(pixels, token_ids)]), max_new_tokens,
                        sampling=Sampling(temperature, top_p, top_k), seed=seed, eos_id=eos_id,
                        stops=stops, on_token=on_token)
    return trim(out[0], eos_id, stops)

  def chat(self, image: Media, question: str, history: Sequence[tuple[str, str]] = (), *,
           max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
           seed: int = 0, on_text: Callable[[str], None] | None = None) -> str:
    """Answer `question` about `image` in the conv_v1_2 template, after `history` turns.

    `image`: one PIL image, several (one media of frames right after BOS, as MIMIC-IT's
    several images or video frames), or None. `max_new_tokens` None: CHAT_NEW_TOKENS, or what
    the context leaves if less (small models have 512 positions in all). A prompt leaving no
    room, or an explicit budget larger than the room, is a ContextFull error.
    """
    stream = None if on_text is None else (lambda row, piece: on_text(piece))
    return self.chat_batch([image], [question], [history], max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed, on_text=stream)[0]

  def chat_batch(self, images: Sequence[Media], questions: Sequence[str],
                 histories: Sequence[Sequence[tuple[str, str]]] | None = None, *,
                 max_new_tokens: int | Sequence[int | None] | None = None,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 steps: int | None = None,
                 on_text: Callable[[int, str], None] | None = None) -> list[str]:
    """`chat` for several independent turns decoded together in one batched generate (rows
    of different lengths; greedy answers equal `chat`'s). `max_new_tokens`: one budget for
    all, or one per turn (None: CHAT_NEW_TOKENS or what that turn's context leaves). `steps`:
    `generate`'s (a server fixes it, so every batch shares one compiled loop). `on_text(i,
    piece)` streams each turn's new text."""
    histories = [()] * len(questions) if histories is None else histories
    if not len(questions) == len(images) == len(histories):
      raise UserError(f"{len(images)} images, {len(questions)} questions and {len(histories)} "
                       "histories: one of each per turn")
    turns = [self._turn(*t) for t in zip(images, questions, histories)]
    asked = (list(max_new_tokens) if isinstance(max_new_tokens, (Sequence, np.ndarray))
             else [max_new_tokens] * len(turns))
    if len(asked) != len(turns):
      raise UserError(f"{len(asked)} budgets for {len(turns)} turns")
    budgets = [min(CHAT_NEW_TOKENS, self._room(t.tokens)) if b is None else b
               for t, b in zip(turns, asked)]
    streams = None if on_text is None else [
        _TextStream(self.tokenizer, functools.partial(on_text, i)) for i in range(len(turns))]
    out = self.generate(self.batch(turns, n_rows=batches.power_of_two(len(turns))), budgets,
                        sampling=Sampling(temperature, top_p), seed=seed,
                        eos_id=self.tokenizer.eos_id, stops=self._stops, steps=steps,
                        on_tokens=None if streams is None else _per_row(streams))
    return [self._answer(row) for row in out[:len(turns)]]

  def segment(self, image: Image.Image, prompt: str, sam: SegmentAnything,
              history: Sequence[tuple[str, str]] = (), *, multimask: bool = False,
              **chat_kwargs) -> Segmentation:
    """Language-referred segmentation (paper §3.3.1): SPHINX answers `prompt` about `image`
    (a detection or referring prompt answers with boxes), each box becomes a SAM box prompt,
    and SAM gives one mask per box, the image's size. An answer without boxes has no masks
    (`Segmentation.message` says so). `chat_kwargs`: `chat`'s."""
    if not isinstance(image, Image.Image):
      raise UserError("segment takes one image (masks are drawn on it)")
    answer = self.chat(image, prompt, history, **chat_kwargs)
    return segment_answer(sam, image, answer, multimask=multimask)

  def _turn(self, image: Media, question: str, history: Sequence[tuple[str, str]]) -> Prompt:
    frames = _frames(image)
    tokens, image_mask = self._chat_layout(len(frames), question, history)
    if not frames:
      return Prompt(tokens, image_mask)
    views = [self.preprocess(frame) for frame in frames]
    return Prompt(tokens, image_mask, {k: np.stack([v[k] for v in views]) for k in views[0]})

  @property
  def _stops(self) -> tuple[tuple[int, ...], ...]:
    return (stop_ids(self.tokenizer),)

  def _answer(self, row: np.ndarray) -> str:
    """An answer's text: cut at EOS or the separator, stripped."""
    new = trim(row, self.tokenizer.eos_id, self._stops)
    return self.tokenizer.decode(new).split(STOP)[0].strip()

  def chat_room(self, image: Media, question: str,
                history: Sequence[tuple[str, str]] = ()) -> int:
    """How many new tokens fit after this turn's prompt (images and history included): an
    answer's largest budget. ContextFull if not even one does."""
    return self._room(self._chat_layout(len(_frames(image)), question, history)[0])

  def _chat_layout(self, n_images: int, question: str,
                   history: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """This turn's tokens and image_mask in the conv_v1_2 template (data.sample.prompt)."""
    if self.tokenizer is None:
      raise UserError("this checkpoint has no tokenizer.model: chat needs one")
    text = conversation_prompt([*history, (question, None)])
    return prompt(text, n_images, self.tokenizer, self.config.image_tokens)

  def _room(self, tokens: np.ndarray) -> int:
    """max_seq_len minus the positions of a prompt (image slots included)."""
    positions = len(tokens)
    if positions >= self.config.llm.max_seq_len:
      raise ContextFull(f"the prompt ({positions} positions, image and history included) leaves "
                        f"no room for an answer in max_seq_len {self.config.llm.max_seq_len}")
    return self.config.llm.max_seq_len - positions

  def _prompt(self, pixels: dict | None, token_ids: Sequence[int]) -> Prompt:
    """Token ids (BOS first) with the image of `pixels`, if any, right after BOS."""
    if not len(token_ids):
      raise UserError("a prompt needs at least one token (BOS)")
    if pixels is None:
      ids = np.asarray(token_ids, np.int32)
      return Prompt(ids, np.zeros(len(ids), bool))
    tokens, image_mask = image_after_bos(token_ids, self.config.image_tokens)
    return Prompt(tokens, image_mask, {k: v[None] for k, v in pixels.items()})


def stop_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  """Ids of the template's stop string as tokenised after text (no leading-space piece)."""
  before = tokenizer.encode("a", bos=False)
  return tuple(tokenizer.encode("a" + STOP, bos=False)[len(before):])


class _TextStream:
  """Turns streamed token ids into new text (decoding the whole answer so far: spaces survive)."""

  def __init__(self, tokenizer: Tokenizer, on_text: Callable[[str], None]):
    self.tokenizer, self.on_text, self.ids, self.text = tokenizer, on_text, [], ""

  def __call__(self, token: int) -> None:
    self.ids.append(token)
    text = self.tokenizer.decode(self.ids).split(STOP)[0]
    if text.startswith(self.text) and len(text) > len(self.text):
      self.on_text(text[len(self.text):])
      self.text = text


def _frames(image: Media) -> list[Image.Image]:
  """A chat turn's images: none, one, or several (one media of frames)."""
  if image is None:
    return []
  if isinstance(image, Image.Image):
    return [image]
  frames = list(image)
  if not all(isinstance(f, Image.Image) for f in frames):
    raise UserError("a chat turn's images must be PIL images")
  return frames


def _first_row(on_token: Callable[[int], None]):
  def callback(tokens: np.ndarray) -> None:
    if int(tokens[0]) >= 0:
      on_token(int(tokens[0]))
  return callback


def _per_row(streams: Sequence[Callable[[int], None]]):
  def callback(tokens: np.ndarray) -> None:
    for stream, token in zip(streams, tokens):
      if int(token) >= 0:
        stream(int(token))
  return callback


@functools.partial(jax.jit, static_argnames=("cfg",))
def _forward(params, batch, *, cfg: SphinxConfig):
  return SphinxNet(cfg).apply(params, batch["tokens"], batch["image_mask"], batch.get("images"),
                              positions=batch["positions"],
                              segment_ids=batch["segment_ids"])[0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _loss_sums(params, batch, *, cfg: SphinxConfig):
  return loss_sums(_forward(params, batch, cfg=cfg), batch)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _encode(params, images, *, cfg: SphinxConfig):
  return SphinxNet(cfg).apply(params, images, method=SphinxNet.encode_images)


@functools.partial(jax.jit, static_argnames=("cfg", "cache_len", "max_new_tokens", "sampling",
                                             "eos_id", "stops", "stream"))
def _generate(params, batch, lengths, budgets, key, *, cfg, cache_len, max_new_tokens, sampling,
              eos_id, stops, stream):
  return generate(SphinxNet(cfg), params, batch, lengths, key,
                  cache=init_cache(cfg.llm, lengths.shape[0], cache_len),
                  step_method=SphinxNet.decode, max_new_tokens=max_new_tokens,
                  sampling=sampling, eos_id=eos_id, stop_sequences=stops, stream=stream,
                  budgets=budgets)


def lower_generate(params, batch, lengths, key, *, cfg: SphinxConfig, cache_len: int,
                   max_new_tokens: int):
  """`Sphinx.generate`'s computation (greedy) lowered for abstract arguments: what the
  ahead-of-time compile (sphinx_jax.aot) compiles for a TPU slice."""
  budgets = lengths  # any int32 [B]: only shapes reach the compiler
  return _generate.lower(params, batch, lengths, budgets, key, cfg=cfg, cache_len=cache_len,
                         max_new_tokens=max_new_tokens, sampling=Sampling(), eos_id=None,
                         stops=(), stream=False)
