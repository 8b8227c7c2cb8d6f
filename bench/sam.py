"""Segment Anything against HF PyTorch's SamModel, in the same run on the same machine.

A ViT-B SAM (random weights at a trained model's scale: speed does not depend on them)
converted from the HF model:
the image encoder on one 1024x1024 image, then the mask decoder for B boxes of that image in one
call (the embedding computed once), fp32. Prints seconds and JAX/PyTorch ratios, and the
encoder's MFU against the measured matmul peak.

  python bench/sam.py [--preset sam_vit_b] [--boxes 1 8 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from bench.llama import matmul_peak, timed  # noqa: E402
from sphinx_jax.checkpoints import params_io  # noqa: E402
from sphinx_jax.checkpoints.sam import HF, HF_UNUSED, _HF_BLOCK, infer_config, sam_parts  # noqa
from sphinx_jax.checkpoints.vision import Source  # noqa: E402
from sphinx_jax.models.sam.sam import Sam  # noqa: E402

HF_VISION = {"sam_vit_b": {}, "sam_vit_l": dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
    global_attn_indexes=[5, 11, 17, 23])}


def encoder_flops(cfg) -> float:
  """Matmul FLOPs of one image through the encoder: projections, MLPs, attention (windows padded
  to whole windows) and the neck."""
  g, d, w = cfg.grid, cfg.width, cfg.window_size
  tokens = g * g
  per_block = 2 * tokens * (4 * d * d + 2 * d * cfg.mlp_dim)
  padded = (-(-g // w) * w) ** 2
  attention = {True: 4 * padded * w * w * d, False: 4 * tokens * tokens * d}  # QK^T and AV
  total = sum(per_block + attention[i not in cfg.global_blocks] for i in range(cfg.depth))
  return total + 2 * tokens * (d * cfg.channels + 9 * cfg.channels ** 2)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=sorted(HF_VISION), default="sam_vit_b")
  parser.add_argument("--boxes", type=int, nargs="+", default=[1, 8, 32])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  hf = transformers.SamModel(transformers.SamConfig(vision_config=HF_VISION[args.preset])).eval()
  torch.manual_seed(0)
  with torch.no_grad():  # a trained model's scale (HF's SAM init is ~1e-10: denormal-prone)
    for name, p in hf.named_parameters():
      p.fill_(1.0) if p.ndim == 1 and name.endswith("weight") else p.normal_(0, 0.02)
  state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  src = Source(state.keys(), state.__getitem__, "", HF, ignore=HF_UNUSED)
  cfg = infer_config(src, _HF_BLOCK, 8, 1e-6)
  params = jax.device_put({"params": params_io.assemble(sam_parts(src, cfg))})
  model = Sam(cfg)
  embed = jax.jit(lambda p, x: model.apply(p, x, method=Sam.embed))
  segment = jax.jit(lambda p, e, b: model.apply(p, e, boxes=b, multimask=False,
                                                method=Sam.segment))
  pixels = np.random.RandomState(0).randn(1, 1024, 1024, 3).astype(np.float32)
  peak = matmul_peak()
  print(f"{args.preset}, fp32, {os.cpu_count()} CPU cores; matmul peak {peak / 1e9:.0f} GFLOP/s")
  jax_embed = timed(lambda: embed(params, pixels).block_until_ready(), args.repeats)
  with torch.no_grad():
    torch_pixels = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
    torch_embed = timed(lambda: hf.get_image_embeddings(torch_pixels), args.repeats)
    embedding = embed(params, pixels)
    torch_embedding = hf.get_image_embeddings(torch_pixels)
    want = torch_embedding.numpy()
    diff = np.abs(np.asarray(embedding).transpose(0, 3, 1, 2) - want).max() / np.abs(want).max()
    mfu = encoder_flops(cfg) / jax_embed / peak
    print(f"image encoder: JAX {jax_embed:.2f} s, PyTorch {torch_embed:.2f} s "
          f"({torch_embed / jax_embed:.2f}x); JAX MFU {100 * mfu:.0f}%; max abs diff {diff:.1e} "
          "of the largest value")
    for n in args.boxes:
      boxes = np.tile(np.array([[[100., 200., 600., 700.]]], np.float32), (1, n, 1))
      ours = timed(lambda: jax.block_until_ready(segment(params, embedding, boxes)),
                   args.repeats)
      theirs = timed(lambda: hf(image_embeddings=torch_embedding,
                                input_boxes=torch.from_numpy(boxes), multimask_output=False),
                     args.repeats)
      print(f"mask decoder, {n} box(es) in one call: JAX {1e3 * ours:.1f} ms, PyTorch "
            f"{1e3 * theirs:.1f} ms ({theirs / ours:.2f}x)")


if __name__ == "__main__":
  main()
