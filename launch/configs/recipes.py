"""The paper's two-stage recipe as config builders; the stage files are thin wrappers.

Data lives under $SPHINX_DATA (default `data/`): `tokenizer.model`; captions of each stage-1
domain in `captions_<domain>.jsonl` with images under `images/`; a text corpus (RefinedWeb-style
`content`) in `corpus.jsonl`; stage-2 dialogs in `dialogs.jsonl` and task annotations in
`tasks/<task>.jsonl`. Runs start from a SPHINX params checkpoint ($SPHINX_INIT: one written by
`launch convert accessory` or by an earlier stage), which carries the pretrained towers.
"""
import os
from pathlib import Path

from sphinx_jax.configs import SPHINX_PRESETS
from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.sources import Captions, Conversations, Task, TextCorpus
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig

DATA_ROOT = Path(os.environ.get("SPHINX_DATA", "data"))
INIT = os.environ.get("SPHINX_INIT", "ckpt/sphinx")
STAGE2_TASKS = ("vqa", "multiple_choice", "rec", "reg", "detection", "layout", "pose",
                "grounded_caption", "relation")


def _train(variant: str, steps: int, optim: OptimConfig, init_from: str = INIT) -> TrainConfig:
  """`variant`'s views (the checkpoint at `init_from` holds the architecture and weights)."""
  return TrainConfig(model=variant, init_from=init_from,
                     view_plan=SPHINX_PRESETS[variant].view_plan, trainable=("llm", "mixer"),
                     steps=steps,
                     micro_batches=4, compute_dtype="bfloat16", remat_policy="full",
                     mesh=MeshConfig(data=1, fsdp=-1, tensor=1), optim=optim,
                     checkpoint_every=1000, log_every=10)


def stage1(domain: str, variant: str = "sphinx") -> Experiment:
  """Pre-training with the LLM unfrozen on one caption domain plus text-only rows in every batch
  (5e-5 -> 5e-6 after 2,000 warmup steps)."""
  return Experiment(
      workdir=f"runs/stage1_{domain}",
      train=_train(variant, 50_000, OptimConfig(lr=5e-5, min_lr=5e-6, warmup_steps=2000)),
      data=DataConfig(
          tokenizer=str(DATA_ROOT / "tokenizer.model"),
          sources=(Captions(str(DATA_ROOT / f"captions_{domain}.jsonl"),
                            image_root=str(DATA_ROOT / "images")),),
          corpus=TextCorpus(str(DATA_ROOT / "corpus.jsonl")), text_rows=4, seq_len=2048,
          batch_size=16))


def stage2(variant: str = "sphinx_1k", init_from: str = INIT) -> Experiment:
  """Multi-task fine-tuning on dialogs and Table-1 tasks (2e-5 -> 0, 3% warmup)."""
  images = str(DATA_ROOT / "images")
  tasks = tuple(Task(str(DATA_ROOT / "tasks" / f"{t}.jsonl"), t, image_root=images)
                for t in STAGE2_TASKS)
  return Experiment(
      workdir=f"runs/stage2_{variant}",
      train=_train(variant, 20_000, OptimConfig(lr=2e-5, min_lr=0.0, warmup_ratio=0.03),
                   init_from),
      data=DataConfig(
          tokenizer=str(DATA_ROOT / "tokenizer.model"),
          sources=(Conversations(str(DATA_ROOT / "dialogs.jsonl"), image_root=images), *tasks),
          seq_len=3072, batch_size=16))
