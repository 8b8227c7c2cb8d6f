"""The optimizer: AdamW (no decay on norms and biases) with warmup + cosine and global-norm
clipping. It sees only the trainable params: frozen towers (or, with LoRA, everything but the
adapters) get no gradient, no update and no optimizer state (big_vision's frozen schedule, by
construction)."""
from __future__ import annotations

import jax
import optax
from flax import traverse_util

from sphinx_jax import sharding
from sphinx_jax.models.lora import is_adapter
from sphinx_jax.train.config import OptimConfig
from sphinx_jax.util.errors import UserError

NO_DECAY = ("scale", "bias")  # norm weights and biases, as the reference's param groups


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio *
                                                                      total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.min_lr)


def _key(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", entry)))


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: _key(path[-1]) not in NO_DECAY, params)


def make(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                  weight_decay=cfg.weight_decay, mask=decay_mask))


LORA = "lora"  # in `trainable`: every LoRA adapter (models.lora), wherever it sits


def split(params: dict, trainable: tuple[str, ...]) -> tuple[dict, dict]:
  """The inner params dict ({'llm':..., 'clip':..., ...}) as (trainable, frozen) trees: whole
  subtrees by name, and 'lora' for the adapters."""
  unknown = set(trainable) - set(params) - {LORA}
  if unknown:
    raise UserError(f"trainable {sorted(unknown)} not in the model's {sorted(params)}")
  train, frozen = {}, {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    chosen = path[0] in trainable or (LORA in trainable and is_adapter(path[-1]))
    (train if chosen else frozen)[path] = leaf
  return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def join(train: dict, frozen: dict) -> dict:
  """The inverse of `split`."""
  return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen),
                                       **traverse_util.flatten_dict(train)})


def state_shardings(tx, params, param_shardings, mesh):
  """(abstract optimizer state of `params`, its shardings): moments sharded as their params,
  counters replicated."""
  state = jax.eval_shape(tx.init, params)
  return state, optax.tree_map_params(tx, lambda _, s: s, state, param_shardings,
                                      transform_non_params=lambda _: sharding.replicated(mesh))
