"""LoRA / QLoRA fine-tuning of a converted release on your own dialogs, on one modest GPU:

  python -m launch convert accessory --src SPHINX-1k --dst ckpt/sphinx_1k
  SPHINX_INIT=ckpt/sphinx_1k SPHINX_DATA=my_data python -m launch train --config finetune_lora
  ... --config.train.quantize=int4        # QLoRA: the frozen LLM stored in int4 (or int8)

The LLM and the towers stay frozen; rank-64 adapters (alpha 16) on every attention and
feed-forward projection train at 2e-4 (the QLoRA paper's recipe for 7B-13B models), so the
optimizer state covers the adapters alone (about 2% of the LLM). The frozen weights are stored
in bf16 (or quantized), the adapters in fp32 (always: they are what the optimizer updates). The export merges the adapters into a plain params
checkpoint that chat, eval and mix read; `--config finetune_lora:sphinx_tiny` fine-tunes another
release (any SPHINX preset: its views).
"""
import dataclasses

from launch.configs import finetune
from sphinx_jax.train.config import OptimConfig


def get_config(variant: str = "sphinx_1k"):
  experiment = finetune.get_config(variant)
  train = dataclasses.replace(
      experiment.train, trainable=("lora",), lora_rank=64, lora_alpha=16.0,
      param_dtype="bfloat16", tower_param_dtype="bfloat16", optim=OptimConfig(lr=2e-4, min_lr=0.0, warmup_ratio=0.03,
                                                      weight_decay=0.0))
  return dataclasses.replace(experiment, workdir=f"runs/finetune_lora_{variant}", train=train)
