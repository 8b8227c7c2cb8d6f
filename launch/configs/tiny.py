"""A tiny SPHINX trained on the small fixture in data_example/: for tests and smoke runs
on a laptop CPU (seconds per step).

  python -m launch train --config tiny --config.workdir=runs/tiny
"""
from pathlib import Path

from sphinx_jax.data.pipeline import DataConfig
from sphinx_jax.data.sources import Conversations, Task
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig

HERE = Path(__file__).parent / "data_example"


def get_config() -> Experiment:
  return Experiment(
      workdir="runs/tiny",
      train=TrainConfig(model="tiny", steps=50, checkpoint_every=10, log_every=5,
                        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                        optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=5,
                                          weight_decay=0.0)),
      data=DataConfig(
          tokenizer=str(HERE / "tokenizer.model"),
          sources=(Conversations(str(HERE / "conversations.jsonl"), image_root=str(HERE / "images")),
                   Task(str(HERE / "grounding.jsonl"), "rec", image_root=str(HERE / "images"))),
          seq_len=256, max_images=2, batch_size=8, threads=1))
