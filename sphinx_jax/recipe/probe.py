"""A linear probe on a SPHINX model's image tokens (the mixer's output, what the LLM reads):
whether the image pathway keeps what the held-out questions ask, before any LLM is trained.

The probe is logistic regression from an image's tokens (all of them, flattened) to the 12
labels "colour x shape is present" of the synthetic world, fit on the training scenes. It then
answers the held-out VQA questions from its 12 scores z: colour of a shape s -> argmax_c z[c, s];
shape of a colour c -> argmax_s z[c, s]; how many s -> #{c : z[c, s] > 0}; is there a c s ->
z[c, s] > 0. If it cannot, no LLM reading the same tokens will.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from sphinx_jax.data import synthetic_scenes
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.sample import views
from sphinx_jax.util.errors import UserError

COLOURS, SHAPES = list(synthetic_scenes.COLOURS), list(synthetic_scenes.SHAPES)
_QUESTIONS = {"colour": re.compile(r"What colour is the (\w+)\?"),
              "shape": re.compile(r"What shape is the (\w+) object\?"),
              "count": re.compile(r"How many (\w+)s are there\?"),
              "yesno": re.compile(r"Is there a (\w+) (\w+)\?")}


def image_tokens(model, world: Path, split: str, limit: int | None = None,
                 batch: int = 256) -> tuple[list[dict], np.ndarray]:
  """(scenes, their image tokens flattened [n, tokens * dim]) under the model's view plan."""
  lines = (Path(world) / split / "scenes.jsonl").read_text().splitlines()[:limit]
  scenes = [json.loads(line) for line in lines]
  plan = VIEW_PLANS[model.config.view_plan]
  out = []
  for start in range(0, len(scenes), batch):
    stacks = []
    for s in scenes[start:start + batch]:
      with Image.open(Path(world) / split / s["image"]) as image:
        stacks.append(views([image], plan))  # views scale 16-bit
    images = {k: np.concatenate([v[k] for v in stacks]) for k in stacks[0]}
    out.append(model.encode_images(images))
  tokens = np.concatenate(out)
  return scenes, tokens.reshape(len(tokens), -1)


def presence(scenes: list[dict]) -> np.ndarray:
  """[n, 12] float: colour x shape present (row-major colour, shape)."""
  labels = np.zeros((len(scenes), len(COLOURS), len(SHAPES)), np.float32)
  for i, s in enumerate(scenes):
    for o in s["objects"]:
      labels[i, COLOURS.index(o["colour"]), SHAPES.index(o["shape"])] = 1
  return labels.reshape(len(scenes), -1)


def fit(x: np.ndarray, y: np.ndarray, steps: int = 500, l2: float = 1e-3, lr: float = 1e-2):
  """Logistic regression (standardised inputs, Adam, full batch): (w, b, mean, std)."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = jnp.asarray((x - mean) / std)
  y = jnp.asarray(y)
  params = (jnp.zeros((x.shape[1], y.shape[1])), jnp.zeros(y.shape[1]))
  tx = optax.adam(lr)

  @jax.jit
  def step(params, state):
    def loss(p):
      logits = x @ p[0] + p[1]
      return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2 * jnp.sum(p[0] ** 2)
    updates, state = tx.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return (*jax.device_get(params), mean, std)


def answer(z: np.ndarray, question: str, kind: str) -> str:
  """The probe's answer to a held-out question from one image's scores z [4, 3]."""
  found = _QUESTIONS[kind].match(question)
  if found is None:
    raise UserError(f"not a synthetic {kind} question: {question!r}")
  if kind == "colour":
    return COLOURS[int(z[:, SHAPES.index(found.group(1))].argmax())]
  if kind == "shape":
    return SHAPES[int(z[COLOURS.index(found.group(1))].argmax())]
  if kind == "count":
    return str(int((z[:, SHAPES.index(found.group(1))] > 0).sum()))
  colour, shape = found.groups()
  return "yes" if z[COLOURS.index(colour), SHAPES.index(shape)] > 0 else "no"


def probe(model, world: Path, limit: int | None = None, fit_on: int = 2000) -> dict:
  """Held-out VQA accuracy per question type of the linear probe on `model`'s image tokens,
  fit on the first `fit_on` training scenes."""
  train, x = image_tokens(model, world, "train", min(fit_on, limit or fit_on))
  held, x_held = image_tokens(model, world, "eval", limit)
  w, b, mean, std = fit(x, presence(train))
  scores = (((x_held - mean) / std) @ w + b).reshape(len(held), len(COLOURS), len(SHAPES))
  by_image = {s["image"]: z for s, z in zip(held, scores)}
  hits: dict[str, list[bool]] = {}
  for line in (Path(world) / "eval" / "vqa.jsonl").read_text().splitlines()[:limit]:
    r = json.loads(line)
    if r["image"] in by_image:
      guess = answer(by_image[r["image"]], r["question"], r["type"])
      hits.setdefault(r["type"], []).append(guess == r["answer"])
  return {kind: float(np.mean(v)) for kind, v in hits.items()}
