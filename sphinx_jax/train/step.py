"""The train state and the jitted, donated, sharded train step (with gradient accumulation)."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sphinx_jax import sharding
from sphinx_jax.configs import LlamaConfig, SphinxConfig
from sphinx_jax.models import quantization, sphinx, text_net
from sphinx_jax.models.loss import chunked_loss_sums, loss_sums, mean_losses, zero_sums
from sphinx_jax.train.optimizer import join, split, state_shardings
from sphinx_jax.util.once import run_once

BATCH_KEYS = ("tokens", "image_mask", "loss_mask", "valid", "segment_ids", "positions", "images",
              "source_id")
ModelConfig = SphinxConfig | LlamaConfig  # a LlamaConfig trains the LLM alone, on text


def network(cfg: ModelConfig) -> nn.Module:
  return sphinx.SphinxNet(cfg) if isinstance(cfg, SphinxConfig) else text_net.TextNet(cfg)


def init_params(cfg: ModelConfig, rng: jax.Array):
  """Boxed params {'params': {'llm': ..., towers and mixer for SPHINX}}."""
  module = sphinx if isinstance(cfg, SphinxConfig) else text_net
  return module.init_params(cfg, rng)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'params': {'llm': ..., 'clip': ..., ...}}
  opt_state: Any  # over the trainable subtrees only


def abstract_state(cfg: ModelConfig, tx, trainable: tuple[str, ...], mesh: Mesh,
                   quantize: str | None = None) -> tuple[TrainState, TrainState]:
  """(abstract TrainState whose leaves carry their shardings, the shardings): nothing allocated.
  `quantize`: the LLM's matmul weights are quantized (a frozen QLoRA base)."""
  boxed = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  param_shardings = sharding.logical_sharding(nn.get_partition_spec(boxed), mesh)
  params = nn.unbox(boxed)
  sharding.check_divisible(params, param_shardings)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        params, param_shardings)
  if quantize is not None:
    inner = params["params"]
    params = {"params": {**inner, "llm": quantization.abstract_llm(inner["llm"], quantize)}}
  train, _ = split(params["params"], trainable)
  opt_state, opt_shardings = state_shardings(tx, train, _shardings(train), mesh)
  opt_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                           opt_state, opt_shardings)
  step = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(mesh))
  abstract = TrainState(step=step, params=params, opt_state=opt_state)
  return abstract, _shardings(abstract)


def _shardings(abstract):
  return jax.tree.map(lambda a: a.sharding, abstract)


def init_state(cfg: ModelConfig, tx, trainable: tuple[str, ...], shardings: TrainState,
               seed: int = 0, params=None, quantize: str | None = None) -> TrainState:
  """A fresh state straight into its shardings: random params, or `params` where given (a
  loaded base without LoRA adapters gets fresh ones). `quantize`: random LLM weights are
  quantized (QLoRA from scratch; a loaded base comes quantized)."""
  def init(key, given):
    p = nn.unbox(init_params(cfg, key))
    if quantize is not None and given is None:
      p = {"params": {**p["params"], "llm": quantization.quantize_llm(p["params"]["llm"],
                                                                     quantize)}}
    if given is not None:
      p = {"params": join(given["params"], split(p["params"], ("lora",))[0])}
    return TrainState(step=jnp.int32(0), params=p,
                      opt_state=tx.init(split(p["params"], trainable)[0]))
  return run_once(init, jax.random.key(seed), params, out_shardings=shardings)


def make_train_step(cfg: ModelConfig, tx, trainable: tuple[str, ...],
                    micro_batches: int = 1, weighting: str = "token",
                    num_sources: int = 1, loss_chunk: int | None = None) -> Callable:
  """(state, batch) -> (state, metrics). The batch is split into `micro_batches` along its rows;
  gradients of the summed token losses are accumulated and divided by the total weight (the
  token count, or the row count with `weighting='sample'`: models.loss). Metrics hold the loss
  of each of the `num_sources` data sources ('loss_by_source', by the rows' `source_id`).
  Only the trainable subtrees are differentiated; the frozen ones pass through untouched.
  `loss_chunk`: the loss `loss_chunk` positions at a time (no [B, T, V] logits)."""
  model = network(cfg)

  def sums_and_grads(train, frozen, batch):
    def loss_fn(t):
      params = {"params": join(t, frozen)}
      out, _ = model.apply(params, batch["tokens"], batch["image_mask"], batch.get("images"),
                           positions=batch["positions"], segment_ids=batch["segment_ids"],
                           head=not loss_chunk)
      if loss_chunk:
        kernel = params["params"]["llm"]["output"]["kernel"]
        sums = chunked_loss_sums(out, kernel, batch, weighting, num_sources, loss_chunk)
      else:
        sums = loss_sums(out, batch, weighting, num_sources)
      return sums["sum"], sums
    return jax.grad(loss_fn, has_aux=True)(train)

  def step(state: TrainState, batch: dict):
    batch = {k: batch[k] for k in BATCH_KEYS if k in batch}  # a text batch has no images
    train, frozen = split(state.params["params"], trainable)
    if micro_batches == 1:
      grads, sums = sums_and_grads(train, frozen, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape(micro_batches, -1, *x.shape[1:]), batch)

      def accumulate(carry, one):
        return jax.tree.map(jnp.add, carry, sums_and_grads(train, frozen, one)), None

      start = (jax.tree.map(jnp.zeros_like, train), zero_sums(num_sources))
      (grads, sums), _ = jax.lax.scan(accumulate, start, micro)
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1), grads)
    updates, opt_state = tx.update(grads, state.opt_state, train)
    params = {"params": join(optax.apply_updates(train, updates), frozen)}
    metrics = {**mean_losses(sums), "grad_norm": optax.global_norm(grads), "tokens": sums["tokens"],
               "padding": 1 - jnp.mean(batch["valid"].astype(jnp.float32))}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def jit_train_step(step: Callable, state_shardings: TrainState, batch_sharding: dict,
                   mesh: Mesh):
  """jit with explicit in/out shardings; the state is donated."""
  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
