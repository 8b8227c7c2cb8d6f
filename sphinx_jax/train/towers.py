"""Stage 0: the towers' own pre-training, then the towers frozen into a SPHINX checkpoint.

This stands for the pre-training SPHINX inherits (CLIP ViT, CLIP ConvNeXt, DINOv2, BLIP-2 come
pre-trained and stay frozen); it is not part of SPHINX's recipe. The objectives are in
models/tower_pretraining.py, the data in data/pairs.py. The output, `workdir/params`, is a SPHINX
params checkpoint whose towers are the trained ones and whose LLM and mixer are freshly
initialised (seeded), which stage 1 starts from.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorboardX import SummaryWriter
from tqdm import tqdm

from sphinx_jax import sharding
from sphinx_jax.configs import SphinxConfig, TextConfig, sphinx_preset
from sphinx_jax.data.pairs import PairsConfig, batches
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.data.tokenizer import Tokenizer
from sphinx_jax.models.sphinx import init_params
from sphinx_jax.models.tower_pretraining import TOWERS, TowerPretraining, pretraining_loss
from sphinx_jax.sharding import MeshConfig
from sphinx_jax.train import optimizer, state_checkpoints
from sphinx_jax.train.config import OptimConfig
from sphinx_jax.util.once import run_once

log = logging.getLogger(__name__)
ZERO_SHOT = "zero_shot.json"  # the towers' held-out zero-shot results, beside the export


@dataclasses.dataclass(frozen=True)
class TowersConfig:
  """Stage 0. `model`: the SPHINX preset whose towers are trained (its view sizes must be the
  data plan's); `text`: the text encoder; `embed_dim`: the contrastive embedding width."""

  workdir: str
  data: PairsConfig
  model: str = "mini"
  text: TextConfig = TextConfig()
  embed_dim: int = 64
  steps: int = 300
  optim: OptimConfig = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, weight_decay=0.05)
  mesh: MeshConfig = MeshConfig(data=1, fsdp=-1, tensor=1)
  seed: int = 0
  log_every: int = 10


def export_dir(config: TowersConfig) -> Path:
  return Path(config.workdir) / "params"


def model(config: TowersConfig) -> TowerPretraining:
  cfg = sphinx_preset(config.model)
  text = config.text.replace(vocab_size=Tokenizer(config.data.tokenizer).vocab_size)
  return TowerPretraining(cfg, text, config.embed_dim)


def _example_batch(config: TowersConfig, cfg: SphinxConfig) -> dict:
  s, t, n = cfg.dinov2.image_size, cfg.convnext_size, 2
  return {"vit": jnp.zeros((n, 2, s, s, 3)), "convnext": jnp.zeros((n, 2, t, t, 3)),
          "dino": jnp.zeros((n, 2, s, s, 3)), "text": jnp.zeros((n, 4), jnp.int32),
          "text_valid": jnp.ones((n, 4), bool), "negatives": jnp.zeros((n, 1, 4), jnp.int32),
          "negatives_valid": jnp.ones((n, 1, 4), bool), "phrases": jnp.zeros((n, 1, 4), jnp.int32),
          "phrases_valid": jnp.ones((n, 1, 4), bool), "boxes": jnp.ones((n, 2, 1, 4)),
          "region_valid": jnp.ones((n, 2, 1), bool)}


def pretrain(config: TowersConfig, label: str = "stage 0: towers") -> tuple[TowerPretraining,
                                                                            dict]:
  """Train every tower against its objective for `config.steps`; writes metrics.jsonl and
  TensorBoard logs in the workdir and exports the SPHINX checkpoint (`export_dir`). Returns the
  module and its trained params (for the towers' zero-shot evaluation); `label` names the
  progress bar."""
  workdir = Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  net = model(config)
  cfg = net.cfg
  mesh = sharding.make_mesh(config.mesh)
  init = lambda key: net.init(key, _example_batch(config, cfg))  # noqa: E731
  params, shardings = sharding.sharded_init(init, mesh, jax.random.key(config.seed))
  tx = optimizer.make(config.optim, config.steps)
  _, opt_shardings = optimizer.state_shardings(tx, params, shardings, mesh)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)

  def step(params, opt_state, batch):
    def loss_fn(p):
      return pretraining_loss(net.apply(p, batch), batch)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {
        **metrics, "grad_norm": optax.global_norm(grads)}

  skips = SkipLog()
  data = iter(batches(config.data, skips))
  first = next(data)
  batch_shardings = sharding.batch_shardings(first, mesh)
  step = jax.jit(step, donate_argnums=(0, 1),
                 in_shardings=(shardings, opt_shardings, batch_shardings),
                 out_shardings=(shardings, opt_shardings, sharding.replicated(mesh)))
  schedule = jax.jit(optimizer.schedule(config.optim, config.steps))  # logged per step
  writer = SummaryWriter(str(workdir / "tensorboard"))
  batch = first
  with open(workdir / "metrics.jsonl", "w") as metrics_file, tqdm(
      total=config.steps, desc=label, dynamic_ncols=True) as bar:
    for i in range(config.steps):
      began = time.perf_counter()
      with sharding.use_mesh(mesh):  # only the step: the data's host ops run outside the mesh
        params, opt_state, out = step(params, opt_state, sharding.put_batch(batch, mesh))
      out = {k: float(v) for k, v in jax.device_get(out).items()}
      if not np.isfinite(out["loss"]):
        raise FloatingPointError(f"stage 0 step {i + 1}: loss {out['loss']}; stopping")
      record = {"step": i + 1, **out, "lr": float(schedule(i)),
                "step_time": time.perf_counter() - began}
      metrics_file.write(json.dumps(record) + "\n")
      if (i + 1) % config.log_every == 0 or i + 1 == config.steps:
        for name, value in record.items():
          if name != "step":
            writer.add_scalar(f"stage0/{name}", value, i + 1)
      bar.set_postfix(loss=f"{out['loss']:.3f}")
      bar.update(1)
      if i + 1 < config.steps:
        batch = next(data)
  writer.close()
  if len(skips):
    log.warning("stage 0 data: %s", skips.summary())
  params = jax.device_get(params)
  export(config, cfg, params)
  return net, params


def export(config: TowersConfig, cfg: SphinxConfig, trained: dict) -> Path:
  """A SPHINX checkpoint: the trained towers, a fresh (seeded) LLM and mixer."""
  fresh = jax.device_get(nn.unbox(run_once(lambda k: init_params(cfg, k),
                                             jax.random.key(config.seed))))
  inner = {**fresh["params"], **{k: v for k, v in trained["params"].items() if k in TOWERS}}
  return state_checkpoints.export_params(export_dir(config), inner, cfg, config.data.tokenizer)
