"""`Sphinx`: a SPHINX checkpoint behind the Python API (preprocess, logits, generation, chat)."""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.configs import SphinxConfig
from sphinx_jax.data import image as image_ops
from sphinx_jax.data.templates import STOP, conversation_prompt
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.inference.generate import generate, streaming, trim
from sphinx_jax.inference.language_model import eos_of, load_sharded, pad_rows
from sphinx_jax.inference.sampling import Sampling
from sphinx_jax.models.llama import init_cache
from sphinx_jax.models.sphinx import Sphinx as SphinxModule
from sphinx_jax.models.sphinx import init_params, prompt_layout

CHAT_NEW_TOKENS = 512  # an answer's budget when none is given (or what the context leaves)


class ContextFull(ValueError):
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
      raise ValueError(f"view plan {config.view_plan!r} gives {self.plan.num_views} views, "
                       f"the config says {config.n_views}")

  @classmethod
  def from_pretrained(cls, ckpt_dir: str | os.PathLike, *, dtype: str | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> "Sphinx":
    """Load a checkpoint written by `launch convert accessory` or by training, sharded on `mesh`
    (default: all devices on the fsdp axis). `dtype` overrides the LLM's param/compute dtypes."""
    config = params_io.read_config(ckpt_dir)
    if config.get("model") != "sphinx":
      raise params_io.CheckpointError(
          f"{ckpt_dir}/config.json: model {config.get('model')!r} is not a SPHINX model")
    try:
      cfg = SphinxConfig.from_dict({k: v for k, v in config.items() if k != "model"})
    except (ValueError, TypeError, AttributeError) as e:  # fields unknown, missing, mistyped
      raise params_io.CheckpointError(f"{ckpt_dir}/config.json: not a SPHINX config ({e})") \
          from None
    if dtype is not None:
      cfg = cfg.replace(llm=cfg.llm.replace(param_dtype=dtype, dtype=dtype))
    mesh = mesh if mesh is not None else sharding.make_mesh()
    params, tokenizer = load_sharded(ckpt_dir, lambda k: init_params(cfg, k), mesh)
    return cls(cfg, params, tokenizer, mesh)

  def preprocess(self, image: Image.Image) -> dict[str, np.ndarray]:
    """The reference transform and view tiling: {'vit': [V, s, s, 3], 'convnext': [V, t, t, 3]}
    float32 NHWC, each stack exactly the pixels that tower sees."""
    square = image_ops.preprocess(image, self.plan.image_size)
    return {k: np.asarray(v) for k, v in image_ops.make_views(square, self.plan).items()}

  def logits(self, pixels: dict | None, token_ids: Sequence[int]) -> np.ndarray:
    """float32 [len(token_ids), vocab]: row i is the distribution of token i+1. With an image,
    its tokens sit between BOS and token 1, and row 0 is read at the end-of-image vector."""
    batch, rows = self._prompt_batch(pixels, [list(token_ids)])
    with sharding.use_mesh(self.mesh):
      logits = _forward(self.params, batch, cfg=self.config)
    return np.asarray(logits[0, rows[0]])

  def generate_ids(self, pixels: dict | None, token_ids: Sequence[int],
                   max_new_tokens: int = 64, *, temperature: float = 0.0, top_p: float = 1.0,
                   top_k: int = 0, seed: int = 0, stop_sequences: Sequence[Sequence[int]] = (),
                   eos_id: int | None = -1,
                   on_token: Callable[[int], None] | None = None) -> list[int]:
    """New token ids after the prompt (EOS / stop sequence excluded); `on_token` streams them."""
    eos_id = eos_of(self.tokenizer) if eos_id == -1 else eos_id
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens {max_new_tokens}: must be at least 1")
    batch, rows = self._prompt_batch(pixels, [list(token_ids)])
    length = int(rows[0][-1]) + 1
    if length + max_new_tokens > self.config.llm.max_seq_len:
      raise ContextFull(f"prompt ({length} positions with image) + max_new_tokens "
                        f"({max_new_tokens}) exceeds max_seq_len {self.config.llm.max_seq_len}")
    lengths = np.ones(batch["tokens"].shape[0], np.int32)
    lengths[0] = length
    sink = (lambda tokens: None) if on_token is None else _first_row(on_token)
    with sharding.use_mesh(self.mesh), streaming(sink):
      out = _generate(self.params, batch, jnp.asarray(lengths), jax.random.key(seed),
                      cfg=self.config, cache_len=batch["tokens"].shape[1] + max_new_tokens,
                      max_new_tokens=max_new_tokens, sampling=Sampling(temperature, top_p, top_k),
                      eos_id=eos_id, stops=stops, stream=on_token is not None)
      out = np.asarray(out)
    return trim(out[0], eos_id, stops)

  def chat(self, image: Image.Image | None, question: str,
           history: Sequence[tuple[str, str]] = (), *, max_new_tokens: int | None = None,
           temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
           on_text: Callable[[str], None] | None = None) -> str:
    """Answer `question` about `image` in the conv_v1_2 template, after `history` turns.

    `max_new_tokens` None: CHAT_NEW_TOKENS, or what the context leaves if less (small models
    have 512 positions in all). A prompt leaving no room, or an explicit budget larger than the
    room, is a ContextFull error.
    """
    ids = self._chat_ids(question, history)
    room = self._room(ids, image is not None)
    max_new_tokens = min(CHAT_NEW_TOKENS, room) if max_new_tokens is None else max_new_tokens
    pixels = None if image is None else self.preprocess(image)
    stream = None if on_text is None else _TextStream(self.tokenizer, on_text)
    new = self.generate_ids(pixels, ids, max_new_tokens, temperature=temperature, top_p=top_p,
                            seed=seed, stop_sequences=[stop_ids(self.tokenizer)], on_token=stream)
    return self.tokenizer.decode(new).split(STOP)[0].strip()

  def chat_room(self, image: Image.Image | None, question: str,
                history: Sequence[tuple[str, str]] = ()) -> int:
    """How many new tokens fit after this turn's prompt (image and history included): an
    answer's largest budget. ContextFull if not even one does."""
    return self._room(self._chat_ids(question, history), image is not None)

  def _chat_ids(self, question: str, history: Sequence[tuple[str, str]]) -> list[int]:
    if self.tokenizer is None:
      raise ValueError("this checkpoint has no tokenizer.model: chat needs one")
    return self.tokenizer.encode(conversation_prompt([*history, (question, None)]), bos=True)

  def _room(self, ids: Sequence[int], with_image: bool) -> int:
    """max_seq_len minus the positions of `ids` and of an image's tokens (after BOS), if any."""
    positions = len(ids) + (self.config.image_tokens if with_image else 0)
    if positions >= self.config.llm.max_seq_len:
      raise ContextFull(f"the prompt ({positions} positions, image and history included) leaves "
                        f"no room for an answer in max_seq_len {self.config.llm.max_seq_len}")
    return self.config.llm.max_seq_len - positions

  def _prompt_batch(self, pixels: dict | None, prompts: list[list[int]]):
    """Model inputs for prompts sharing one image (or none), and each prompt's text rows."""
    k = self.config.image_tokens if pixels is not None else 0
    layouts = [prompt_layout(p, k) for p in prompts]
    tokens, _ = pad_rows([t.tolist() for t, _ in layouts], sharding.batch_multiple(self.mesh))
    image_mask = np.zeros(tokens.shape, bool)
    for row, (_, mask) in enumerate(layouts):
      image_mask[row, :len(mask)] = mask
    batch = {"tokens": tokens, "image_mask": image_mask}
    if pixels is not None:
      batch["images"] = {name: np.broadcast_to(v[None, None], (tokens.shape[0], 1, *v.shape))
                         for name, v in pixels.items()}
    rows = [np.array([k] + [k + i for i in range(1, len(p))]) for p in prompts]
    return jax.tree.map(jnp.asarray, batch), rows


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


def _first_row(on_token: Callable[[int], None]):
  def callback(tokens: np.ndarray) -> None:
    if int(tokens[0]) >= 0:
      on_token(int(tokens[0]))
  return callback


@functools.partial(jax.jit, static_argnames=("cfg",))
def _forward(params, batch, *, cfg: SphinxConfig):
  return SphinxModule(cfg).apply(params, **batch)[0]


@functools.partial(jax.jit, static_argnames=("cfg", "cache_len", "max_new_tokens", "sampling",
                                             "eos_id", "stops", "stream"))
def _generate(params, batch, lengths, key, *, cfg, cache_len, max_new_tokens, sampling, eos_id,
              stops, stream):
  return generate(SphinxModule(cfg), params, batch, lengths, key,
                  cache=init_cache(cfg.llm, lengths.shape[0], cache_len),
                  step_method=SphinxModule.decode, max_new_tokens=max_new_tokens,
                  sampling=sampling, eos_id=eos_id, stop_sequences=stops, stream=stream)
