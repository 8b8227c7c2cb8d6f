"""A tiny SPHINX trained in seconds to name a centred square's colour and to detect it (the
web demo's and the SAM cascade's tests): answers follow the image, and a detection prompt
answers `<p>red square</p>[0.25,0.25,0.75,0.75]`. conftest's `trained_sphinx` builds it once."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from sphinx_jax.configs import sphinx_preset
from sphinx_jax.data import pipeline, sources, synthetic, tasks, templates
from sphinx_jax.data.synthetic_scenes import COLOURS
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train.config import Experiment, OptimConfig, TrainConfig
from sphinx_jax.train.loop import train

QUESTION = "What colour is the square?"
STEPS = 120


def scene(colour: str) -> Image.Image:
  """A 64-px white image with a centred 32-px square of `colour`: box [0.25,0.25,0.75,0.75]."""
  image = Image.new("RGB", (64, 64), (255, 255, 255))
  image.paste(COLOURS[colour], (16, 16, 48, 48))
  return image


def train_square_model(root: Path) -> Path:
  """Train it under `root`; returns the params checkpoint."""
  (root / "images").mkdir()
  rng = np.random.default_rng(0)
  dialogs, detection, texts = [], [], []
  for i in range(192):
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    scene(colour).save(root / "images" / f"{i}.png")
    image = f"images/{i}.png"
    dialogs.append({"image": image, "conversations": [
        {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": colour}]})
    detection.append({"image": image, "objects": [{"label": f"{colour} square",
                                                   "box": [16, 16, 48, 48]}]})
    texts += [templates.conversation_prompt([(QUESTION, colour)]),
              templates.conversation_prompt(tasks.detection(detection[-1], (64, 64)))]
  for name, records in (("dialogs", dialogs), ("detection", detection)):
    (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  synthetic.train_tokenizer(texts * 4, root / "tokenizer.model")
  run = root / "run"
  train(Experiment(
      str(run),
      TrainConfig(model="tiny", steps=STEPS, log_every=STEPS, checkpoint_every=1000,
                  mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
                  optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, weight_decay=0.0)),
      pipeline.DataConfig(tokenizer=str(root / "tokenizer.model"),
                          sources=(sources.Conversations(str(root / "dialogs.jsonl"),
                                                         str(root)),
                                   sources.Task(str(root / "detection.jsonl"), "detection",
                                                image_root=str(root))),
                          view_plan="tiny", tokens_per_image=sphinx_preset("tiny").image_tokens,
                          seq_len=112, batch_size=16, threads=1)))
  return run / f"params_step{STEPS}"
