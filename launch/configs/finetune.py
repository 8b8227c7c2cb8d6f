"""Fine-tuning a converted release on your own dialogs (LLaMA2-Accessory / LLaVA JSON):

  python -m launch convert accessory --src SPHINX-1k --dst ckpt/sphinx_1k
  SPHINX_INIT=ckpt/sphinx_1k SPHINX_DATA=my_data python -m launch train --config finetune

`--config finetune:sphinx_tiny` fine-tunes another release (any SPHINX preset: its views).
The recipe of the SPHINX README: lr 2e-5, 3% warmup, global batch 16 x data-parallel size.
"""
import dataclasses

from launch.configs.recipes import stage2


def get_config(variant: str = "sphinx_1k"):
  experiment = stage2(variant)
  data = dataclasses.replace(experiment.data, sources=experiment.data.sources[:1])  # dialogs only
  return dataclasses.replace(experiment, workdir=f"runs/finetune_{variant}", data=data)
