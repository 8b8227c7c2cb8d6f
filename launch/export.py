"""`export hf --checkpoint DIR --dst DIR`: a params checkpoint's LLM in another framework's form."""
import argparse
from pathlib import Path

HELP = ("export the LLM of a params checkpoint (a SPHINX's or an LLM's) as an HF Llama directory "
        "(the inverse of `convert hf`); SPHINX's vision towers and mixer have no HF Llama form "
        "and are left out")


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("format", choices=("hf",),
                      help="hf: config.json + safetensors (+ tokenizer) for "
                           "transformers' LlamaForCausalLM")
  parser.add_argument("--checkpoint", type=Path, required=True,
                      help="params checkpoint directory (convert, train or mix output)")
  parser.add_argument("--dst", type=Path, required=True, help="output directory (must not exist)")


def run(args: argparse.Namespace) -> int:
  from sphinx_jax.checkpoints import hf_export
  dst = hf_export.export_hf(args.checkpoint, args.dst)
  print(f"wrote {dst}: load it with transformers.LlamaForCausalLM.from_pretrained({str(dst)!r})")
  return 0
