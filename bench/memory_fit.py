"""Which GPU holds which model: bytes by shape evaluation of the real presets (no weights).

  python bench/memory_fit.py [--lora-activations-gib X]

Serving: SPHINX, SPHINX-1k and SPHINX-Tiny, bf16 towers and mixer, the LLM in bf16 / int8 / int4
(sphinx_jax.models.quantization), a 4,096-token bf16 KV cache at batch 1. LoRA fine-tuning of
SPHINX-1k (configs/finetune_lora.py: rank 64 on every projection): the frozen model, fp32
adapters, their gradients and AdamW moments, plus the activations of a step if given (measure
them with `launch compile --config finetune_lora ...`: the compiler's temporaries). A card
"fits" a total up to 90% of its memory (aot.memory.USABLE). Prints a markdown table.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sphinx_jax.aot import memory  # noqa: E402
from sphinx_jax.configs import LORA_TARGETS, llm_preset, sphinx_preset  # noqa: E402
from sphinx_jax.models import quantization  # noqa: E402

GIB = 2 ** 30


def _row(name: str, parts: dict, extra: int = 0) -> str:
  total = parts["total"] + extra
  cards = memory.fits(total)
  shown = ", ".join(f"{g} GB" for g in cards) if cards else "none of " + \
      "/".join(str(g) for g in memory.GPU_GIB)
  cells = [f"{parts[k] / GIB:.1f}" for k in parts if k != "total"]
  return f"| {name} | " + " | ".join(cells) + f" | {total / GIB:.1f} | {shown} |"


def _llm_ratio(scheme: str) -> float:
  """LLaMA-2-13B's parameter bytes quantized vs all fp32 (scales included)."""
  llm = llm_preset("llama2_13b")
  cfg = sphinx_preset("sphinx").replace(llm=llm)
  fp32 = quantization.nbytes(memory.abstract_params(cfg, "float32")["llm"])
  return quantization.nbytes(memory.abstract_params(cfg, "float32", scheme)["llm"]) / fp32


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lora-activations-gib", type=float, default=None,
                      help="the compiler's temporaries of one LoRA step, added to the totals")
  args = parser.parse_args()
  for scheme in ("int8", "int4"):
    print(f"LLaMA-2-13B parameter bytes, {scheme} / fp32 (scales included): "
          f"{_llm_ratio(scheme):.3f}")
  print("\n| serving (batch 1, 4,096-token KV cache) | LLM GiB | towers + mixer GiB | "
        "KV cache GiB | total GiB | fits |")
  print("|---|---|---|---|---|---|")
  for preset in ("sphinx", "sphinx_1k", "sphinx_tiny"):
    for scheme in (None, "int8", "int4"):
      print(_row(f"{preset} {scheme or 'bf16'}",
                 memory.inference(sphinx_preset(preset), scheme)))
  activations = int((args.lora_activations_gib or 0) * GIB)
  label = (f"+ {args.lora_activations_gib:.1f} GiB activations" if args.lora_activations_gib
           else "no activations")
  print(f"\n| LoRA fine-tuning of sphinx_1k, rank 64 ({label}) | frozen model GiB | adapters GiB"
        " | adapter grads GiB | AdamW moments GiB | total GiB | fits |")
  print("|---|---|---|---|---|---|---|")
  for scheme in (None, "int8", "int4"):
    parts = memory.lora_finetune(sphinx_preset("sphinx_1k"), 64, LORA_TARGETS, scheme)
    print(_row(f"base {scheme or 'bf16'}", parts, activations))


if __name__ == "__main__":
  main()
