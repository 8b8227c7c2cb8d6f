"""`serve [--checkpoint DIR]`: the web demo (Gradio) on http://HOST:PORT.

Needs `pip install -r requirements-demo.txt` (Gradio; PyAV for video uploads). Without
--checkpoint it serves the embedded default's final model (runs/default/final_model). Concurrent
users are decoded together (up to --max-batch per generate); at most --max-waiting requests wait,
later ones are told the server is busy. `/chat` is the API endpoint for `gradio_client`.
"""
import argparse
from pathlib import Path

from launch import QUANTIZE
from sphinx_jax.util.errors import UserError

HELP = "serve a SPHINX checkpoint as a web demo (Gradio): images or video, streaming chat, boxes"
DEFAULT_MODEL = Path("runs/default/final_model")


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", type=Path, default=None,
                      help=f"a params directory (default: {DEFAULT_MODEL}, the embedded "
                           "default's final model, if `python -m launch train` made one)")
  parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                      help="load the LLM's matmul weights quantized (as `chat --quantize`)")
  parser.add_argument("--sam", type=Path, default=None,
                      help="a SAM checkpoint (`launch convert sam`): each box of an answer is "
                           "segmented and its mask drawn")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (0.0.0.0: every interface)")
  parser.add_argument("--port", type=int, default=7860, help="port to listen on")
  parser.add_argument("--max-batch", type=int, default=8,
                      help="requests decoded together in one generate")
  parser.add_argument("--max-waiting", type=int, default=32,
                      help="requests that may wait; beyond it a request is refused as busy")
  parser.add_argument("--max-new-tokens", type=int, default=256,
                      help="the longest answer a request may ask for")
  parser.add_argument("--max-frames", type=int, default=8,
                      help="images per turn, and frames sampled from a video")
  parser.add_argument("--max-upload-mb", type=int, default=50, help="largest upload")
  parser.add_argument("--no-warmup", action="store_true",
                      help="skip compiling the batched decode before serving (the first "
                           "requests of each batch size then wait for the compiler)")


def resolve_checkpoint(checkpoint: Path | None) -> Path:
  """--checkpoint, or the default's final model; a one-line error saying how to get one."""
  if checkpoint is not None:
    return checkpoint
  if (DEFAULT_MODEL / "config.json").is_file():
    return DEFAULT_MODEL
  raise UserError(f"no --checkpoint and no {DEFAULT_MODEL}: run `python -m launch train` (the "
                  "embedded default) or pass --checkpoint DIR")


def run(args: argparse.Namespace) -> int:
  checkpoint = resolve_checkpoint(args.checkpoint)
  for name in ("max_batch", "max_waiting", "max_new_tokens", "max_frames", "max_upload_mb"):
    if getattr(args, name) < 1:
      raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
  try:
    from sphinx_jax.serve import app
  except ModuleNotFoundError as e:
    raise UserError(f"serve needs {e.name}: pip install -r requirements-demo.txt") from None
  from sphinx_jax import Sphinx
  from sphinx_jax.checkpoints.params_io import read_config
  from sphinx_jax.serve.batcher import Batcher, warm_up

  read_config(checkpoint)  # a missing/bad config.json fails before anything is loaded
  sam = None
  if args.sam is not None:  # before SPHINX: a wrong directory fails first
    from sphinx_jax.inference import segment
    sam = segment.SegmentAnything.from_pretrained(args.sam)
  print(f"loading {checkpoint} ...", flush=True)
  model = Sphinx.from_pretrained(checkpoint, quantize=args.quantize)
  limits = app.Limits(max_frames=args.max_frames, max_upload_mb=args.max_upload_mb)
  batcher = Batcher(model, max_batch=args.max_batch, max_waiting=args.max_waiting,
                    max_new_tokens=args.max_new_tokens)
  if not args.no_warmup:
    print(f"compiling the decode for batches of {warm_up(batcher)} rows", flush=True)
  demo = app.build(batcher, limits, title=f"SPHINX: {checkpoint.resolve().name}", sam=sam)
  print(f"serving {checkpoint} on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
  demo.launch(server_name=args.host, server_port=args.port, theme=app.THEME,
              max_file_size=f"{args.max_upload_mb}mb", show_error=True, quiet=True)
  return 0
