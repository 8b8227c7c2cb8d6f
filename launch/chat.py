"""`chat --checkpoint DIR [--image PATH] [--prompt TEXT]`: talk to a SPHINX checkpoint.

With --prompt: one answer, streamed, then exit. Without: an interactive session (empty line or
Ctrl-D ends it; `/image PATH` switches the image; `/reset` forgets the history). Decoding is
greedy by default, as `eval`. Boxes in an answer (`<p>phrase</p>[x1,y1,x2,y2]`) are drawn on the
image (enlarged when small) when --boxes-out is given. With --sam (a checkpoint from `launch convert
sam`), each box of an answer becomes a Segment Anything box prompt and its mask is drawn, tinted,
in --masks-out (SPHINX's language-referred segmentation).

An answer gets --max-new-tokens, or by default up to 512 new tokens; either way at most what the
model's context (max_seq_len) leaves after the prompt: a larger --max-new-tokens is reduced, with
a note, since it is a cap and the answer usually ends before it. A turn that leaves no room is an
error; in the interactive session it is reported and the session goes on (`/reset` makes room).
"""
import argparse
import sys
from pathlib import Path

from launch import QUANTIZE
from sphinx_jax.util.errors import UserError

HELP = "chat with a SPHINX checkpoint about an image (one-shot or interactive)"


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", type=Path, required=True,
                      help="a params directory: written by `launch convert` or `launch mix`, or "
                           "by training (WORKDIR/<stage>/params_stepN; the default's final model "
                           "is runs/default/final_model)")
  parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                      help="load the LLM's matmul weights quantized (int8: per output channel; "
                           "int4 / nf4: groups of 128), the towers at full precision; a checkpoint "
                           "converted with --quantize loads quantized without it")
  parser.add_argument("--image", type=Path, default=None,
                      help="image file (any PIL format; at most $SPHINX_MAX_IMAGE_PIXELS pixels, "
                           "default 8192 x 8192)")
  parser.add_argument("--prompt", default=None, help="ask this once and exit")
  parser.add_argument("--short", action="store_true",
                      help="ask for a short answer: append SPHINX's instruction \"Answer the "
                           "question using a single word or phrase.\" (its VQA prompt, as eval)")
  parser.add_argument("--max-new-tokens", type=int, default=None,
                      help="cap on an answer's length (default: 512, or what the model's "
                           "context leaves after the prompt if less)")
  parser.add_argument("--temperature", type=float, default=0.0,
                      help="0: greedy, as eval (the reference demo samples at 0.1, top-p 0.75)")
  parser.add_argument("--top-p", type=float, default=1.0,
                      help="with --temperature > 0: sample from the smallest set of tokens whose "
                           "probabilities sum to this (1: all)")
  parser.add_argument("--seed", type=int, default=0,
                      help="sampling seed (with --temperature > 0): the same seed, the same answer")
  parser.add_argument("--boxes-out", type=Path, default=None,
                      help="save the image with the answer's boxes drawn here (PNG)")
  parser.add_argument("--sam", type=Path, default=None,
                      help="a SAM checkpoint (`launch convert sam`): segment each box of an "
                           "answer (needs --image and --masks-out)")
  parser.add_argument("--masks-out", type=Path, default=None,
                      help="with --sam: save the image with each box's mask and phrase here (PNG)")


def capped(requested: int | None, room: int) -> int | None:
  """The budget to ask for: `requested` reduced to the context's `room` (with a note), or None
  (the model's default, which fits by itself)."""
  if requested is None or requested <= room:
    return requested
  print(f"note: --max-new-tokens {requested} reduced to {room}: what the model's context leaves "
        "after this prompt", file=sys.stderr)
  return room


def run(args: argparse.Namespace) -> int:
  from sphinx_jax import Sphinx
  from sphinx_jax.checkpoints.params_io import read_config
  from sphinx_jax.data import tasks
  from sphinx_jax.data.records import read_image_file
  from sphinx_jax.inference.sphinx_model import ContextFull
  if args.max_new_tokens is not None and args.max_new_tokens < 1:
    raise UserError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
  if (args.sam is None) != (args.masks_out is None) or (args.sam and args.image is None):
    raise UserError("--sam and --masks-out go together, with --image")
  read_config(args.checkpoint)  # a missing/bad config.json fails before anything is loaded
  sam = None
  if args.sam is not None:  # before SPHINX: a wrong directory fails first
    from sphinx_jax.inference import segment
    sam = segment.SegmentAnything.from_pretrained(args.sam)
  image = read_image_file(args.image) if args.image else None
  model = Sphinx.from_pretrained(args.checkpoint, quantize=args.quantize)
  history: list[tuple[str, str]] = []

  def answer(question: str, prefix: str = "") -> None:
    if args.short:
      question = f"{question}\n{tasks.VQA}"
    budget = capped(args.max_new_tokens, model.chat_room(image, question, history))
    print(prefix, end="", flush=True)
    text = model.chat(image, question, history, max_new_tokens=budget,
                      temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                      on_text=lambda piece: print(piece, end="", flush=True))
    print()
    history.append((question, text))
    if args.boxes_out and image is not None:
      from sphinx_jax.inference import grounding
      found = grounding.parse(text)
      grounding.draw(grounding.upscaled(image), found).save(args.boxes_out)
      print(f"[{sum(len(g.coords) for g in found)} box(es) drawn in {args.boxes_out}]")
    if sam is not None:  # --sam comes with --image
      try:
        result = segment.segment_answer(sam, image, text)
      except UserError as e:  # the answer stands; the session goes on
        print(f"error: segmenting the answer's boxes: {e}", file=sys.stderr)
        return
      if len(result.masks):
        segment.overlay(image, result).save(args.masks_out)
        print(f"[{result.message} drawn in {args.masks_out}]")
      else:
        print(f"[{result.message}]")

  if args.prompt is not None:
    answer(args.prompt)
    return 0
  while True:
    try:
      question = input("Human: ").strip()
    except EOFError:
      return 0
    if not question:
      return 0
    if question.startswith("/image "):
      try:
        image, history = read_image_file(question[7:].strip()), []
      except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
      continue
    if question == "/reset":
      history = []
      continue
    try:
      answer(question, prefix="Assistant: ")
    except ContextFull as e:
      hint = "/reset forgets the history" if history else "ask something shorter"
      print(f"error: {e}; {hint}", file=sys.stderr)
