"""`convert accessory|meta|hf|sam --src PATH --dst DIR`: PyTorch checkpoints -> params
checkpoint."""
import argparse
from pathlib import Path

from launch import QUANTIZE
from sphinx_jax.util.errors import UserError

HELP = ("convert LLaMA2-Accessory SPHINX, Meta LLaMA-2, HF Llama or Segment Anything checkpoints "
        "into a sphinx-jax params checkpoint")


def add_parser(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("format", choices=("accessory", "meta", "hf", "sam"),
                      help="accessory: SPHINX release (consolidated.NN-of-MM.model.pth, config.json, "
                           "meta.json); meta: consolidated.NN.pth + params.json; "
                           "hf: config.json + safetensors; sam: an official sam_vit_{b,l,h}_*.pth "
                           "file or an HF SamModel directory (config.json + model.safetensors)")
  parser.add_argument("--src", type=Path, required=True,
                      help="source checkpoint directory (sam: or the .pth file)")
  parser.add_argument("--dst", type=Path, required=True, help="output directory (must not exist)")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                      help="parameter dtype to store (default: the source's)")
  parser.add_argument("--tokenizer", type=Path, default=None,
                      help="tokenizer.model (default: found in --src or its parent)")
  parser.add_argument("--quantize", choices=QUANTIZE, default=None,
                      help="store the LLM's matmul weights quantized (int8: per output channel; "
                           "int4 / nf4: groups of 128 inputs, nf4 on QLoRA's NormalFloat levels); "
                           "towers, mixer, norms and embeddings "
                           "stay at --dtype. Loads directly, no float copy")
  parser.add_argument("--view-plan", default=None,
                      help="accessory only: override the variant's view plan (e.g. tiny_1k for "
                           "small test models)")


def run(args: argparse.Namespace) -> int:
  from sphinx_jax.checkpoints import accessory, llama, sam
  if args.format == "sam":
    if args.quantize or args.tokenizer or args.view_plan:
      raise UserError("convert sam takes --src, --dst and --dtype only")
    dst = sam.convert_sam(args.src, args.dst, dtype=args.dtype)
  elif args.format == "accessory":
    dst = accessory.convert_accessory(args.src, args.dst, dtype=args.dtype,
                                      tokenizer=args.tokenizer, view_plan=args.view_plan,
                                      quantize=args.quantize)
  else:
    if args.view_plan is not None:
      raise UserError("--view-plan applies to `convert accessory` only")
    convert = {"meta": llama.convert_meta, "hf": llama.convert_hf}[args.format]
    dst = convert(args.src, args.dst, dtype=args.dtype, tokenizer=args.tokenizer,
                  quantize=args.quantize)
  print(f"wrote {dst}")
  return 0
