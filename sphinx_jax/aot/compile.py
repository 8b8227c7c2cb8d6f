"""Ahead-of-time compilation of a config's train step (or its prefill + decode step) for a TPU
slice, on any host: per-chip memory from the real compiler, and the step time and throughput the
analytic FLOPs give at a target MFU. Nothing is allocated: the state and the batch are abstract,
and neither the data nor the init checkpoint needs to exist.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from sphinx_jax import sharding
from sphinx_jax.aot.topology import Slice, devices
from sphinx_jax.configs import SphinxConfig
from sphinx_jax.data.pipeline import batch_shapes
from sphinx_jax.inference.sphinx_model import lower_generate
from sphinx_jax.models import quantization
from sphinx_jax.train import loop
from sphinx_jax.train.config import Experiment
from sphinx_jax.train.flops import step_flops
from sphinx_jax.util.errors import UserError

log = logging.getLogger(__name__)
MFUS = (0.4, 0.6)


def _shapes_only(exp: Experiment) -> Experiment:
  """`exp` with an init checkpoint that is not on disk replaced by the preset of `train.model`
  (the same architecture for the shipped configs)."""
  t = exp.train
  if t.init_from and not (Path(t.init_from) / "config.json").is_file():
    log.info("%s: no checkpoint here; shapes from the %r preset", t.init_from, t.model)
    return dataclasses.replace(exp, train=dataclasses.replace(t, init_from=None))
  return exp


def _with_shardings(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def _lower_train(exp: Experiment, devs: list):
  run = loop.setup(exp, devs)
  data = exp.data.for_model(run.cfg)
  batch = batch_shapes(data)
  batch_shardings = sharding.batch_shardings(batch, run.mesh)
  sharding.check_divisible(batch, batch_shardings)
  step = loop.step_function(run, exp.train, batch_shardings)
  with sharding.use_mesh(run.mesh):
    lowered = step.lower(run.abstract, _with_shardings(batch, batch_shardings))
  rows, length = batch["tokens"].shape
  flops = step_flops(run.cfg, run.abstract.params["params"], batch)
  return lowered, run.mesh, flops, rows * length


def _lower_decode(exp: Experiment, devs: list, rows: int, max_len: int,
                  quantize: str | None = None):
  """Prefill of `max_len - 1` positions (the batch's images included) then one decode step,
  in the run's compute dtype (weights stored in it too, as served; the LLM's matmul weights
  quantized by `quantize`)."""
  t = exp.train
  t = dataclasses.replace(t, param_dtype=t.compute_dtype, tower_param_dtype=t.compute_dtype)
  run = loop.setup(dataclasses.replace(exp, train=t), devs)
  if not isinstance(run.cfg, SphinxConfig):
    raise UserError("--mode decode compiles SPHINX's generate; a text-only config compiles its "
                    "train step only")
  data = dataclasses.replace(exp.data.for_model(run.cfg), seq_len=max_len - 1, batch_size=rows,
                             text_rows=0)
  batch = {k: v for k, v in batch_shapes(data).items() if k in ("tokens", "image_mask", "images")}
  shardings = sharding.batch_shardings(batch, run.mesh)
  sharding.check_divisible(batch, shardings)
  lengths = jax.ShapeDtypeStruct((rows,), jnp.int32,
                                 sharding=sharding.batch_sharding(run.mesh, 1))
  key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                             sharding=sharding.replicated(run.mesh))
  params = run.abstract.params
  if quantize is not None:
    params = {"params": {**params["params"],
                         "llm": quantization.abstract_llm(params["params"]["llm"], quantize)}}
  with sharding.use_mesh(run.mesh):
    lowered = lower_generate(params, _with_shardings(batch, shardings), lengths,
                             key, cfg=run.cfg, cache_len=max_len, max_new_tokens=1)
  prefill = {**batch, "tokens": jax.ShapeDtypeStruct((rows, max_len), jnp.int32)}
  flops = step_flops(run.cfg, run.abstract.params["params"], prefill, backward=False)
  return lowered, run.mesh, flops, rows * max_len


def _reason(error: Exception) -> str:
  """The compiler's one-line reason for not fitting."""
  lines = str(error).splitlines()
  line = next((x for x in lines if "RESOURCE_EXHAUSTED" in x or "Ran out of memory" in x),
              lines[0] if lines else "")
  return " ".join(line.split())[:400]


def _out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text or "HBM" in text


def compile_for(exp: Experiment, tpu: Slice, mode: str = "train", batch: int = 1,
                max_len: int = 2048, quantize: str | None = None) -> dict:
  """Compile `exp`'s train step (`mode='train'`) or prefill + one decode step of `batch` rows of
  `max_len` (`mode="decode"`, the LLM quantized by `quantize`) for `tpu`: the report `launch
  compile` prints and writes."""
  if quantize is not None and mode != "decode":
    raise UserError("--quantize applies to --mode decode (a quantized base trains under LoRA: "
                    "--config.train.quantize, configs/finetune_lora.py)")
  exp = _shapes_only(exp)
  devs = devices(tpu)
  began = time.perf_counter()
  if mode == "train":
    lowered, mesh, flops, tokens = _lower_train(exp, devs)
  elif mode == "decode":
    lowered, mesh, flops, tokens = _lower_decode(exp, devs, batch, max_len, quantize)
  else:
    raise UserError(f"--mode {mode!r}: train or decode")
  report = {"topology": tpu.name, "torus": tpu.topology, "num_slices": tpu.num_slices,
            "chips": tpu.chips, "mode": mode, "mesh": dict(mesh.shape),
            "quantize": quantize, "hbm_bytes_per_chip": tpu.chip.hbm_bytes,
            "model_flops_per_step": float(flops), "tokens_per_step": int(tokens)}
  try:
    compiled = lowered.compile()
  except Exception as e:  # noqa: BLE001 -- only an out-of-memory compile is a result
    if not _out_of_memory(e):
      raise
    return {**report, "fits": False, "reason": _reason(e), "bytes_per_chip": None,
            "compile_seconds": round(time.perf_counter() - began, 1),
            "step_seconds": None, "tokens_per_s_per_chip": None}
  seconds = time.perf_counter() - began
  memory = compiled.memory_analysis()
  used = {"arguments": memory.argument_size_in_bytes, "outputs": memory.output_size_in_bytes,
          "aliases": memory.alias_size_in_bytes, "temp": memory.temp_size_in_bytes,
          "code": memory.generated_code_size_in_bytes}
  used["total"] = (used["arguments"] + used["outputs"] - used["aliases"] + used["temp"]
                   + used["code"])
  peak = tpu.chip.bf16_flops * tpu.chips
  step_seconds = {f"mfu_{m}": flops / (peak * m) for m in MFUS}
  return {**report, "fits": used["total"] <= tpu.chip.hbm_bytes, "bytes_per_chip": used,
          "compile_seconds": round(seconds, 1), "step_seconds": step_seconds,
          "tokens_per_s_per_chip": {k: tokens / s / tpu.chips for k, s in step_seconds.items()}}
