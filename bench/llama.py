"""LLaMA throughput against HF PyTorch, in the same run on the same machine.

Measures a ~110M-parameter decoder (fp32): training step (forward + backward) tokens/s, and
greedy decoding tokens/s at batch 1 and 8, float and with the matmul weights in int8 and int4
(models.quantization; PyTorch stays fp32); prints JAX/PyTorch ratios, the MFU of the training
step against this machine's measured matmul peak, and float decoding as a fraction of its
memory-bandwidth roofline (weights + the KV cache read per token, over the measured bandwidth).

  python bench/llama.py [--steps 5] [--seq 256] [--batch 4] [--new-tokens 32] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from sphinx_jax import LanguageModel  # noqa: E402
from sphinx_jax import sharding  # noqa: E402
from sphinx_jax.models.llama import Llama  # noqa: E402
from sphinx_jax.models.quantization import quantize_llm  # noqa: E402
from tests import llama_refs  # noqa: E402

DIM, LAYERS, HEADS, VOCAB, FFN = 768, 12, 12, 16000, 2048


def timed(fn, repeats: int) -> float:
  """Best-of-`repeats` seconds of fn() (after one warm-up call)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_peak(n: int = 2048) -> float:
  """The machine's practical fp32 peak: the faster of XLA's and PyTorch's large matmul."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  xla = timed(lambda: f(a).block_until_ready(), 5)
  t = torch.ones(n, n)
  aten = timed(lambda: t @ t, 5)
  return 2 * n ** 3 / min(xla, aten)


def memory_bandwidth(n: int = 64 * 2**20) -> float:
  """Bytes/s of a large reduction (read once): the faster of XLA's and PyTorch's."""
  a = jnp.ones((n,), jnp.float32)
  f = jax.jit(jnp.sum)
  xla = timed(lambda: f(a).block_until_ready(), 5)
  t = torch.ones(n)
  aten = timed(lambda: t.sum(), 5)
  return 4 * n / min(xla, aten)


def decode_roofline(n_params: int, batch: int, prompt: int, new: int, bandwidth: float) -> float:
  """Tokens/s if each decode step only read the fp32 weights once and each row's KV cache up to
  its mean length: batch / ((weights + cache bytes) / bandwidth)."""
  cache = batch * 2 * LAYERS * DIM * 4 * (prompt + new / 2)
  return batch * bandwidth / (4 * n_params + cache)


def models() -> tuple:
  """(HF PyTorch model, our LanguageModel of the same weights on one device, parameter count):
  the ~110M fp32 decoder every bench here measures."""
  hf = llama_refs.hf_llama(kv_heads=HEADS, layers=LAYERS, vocab=VOCAB, dim=DIM, heads=HEADS,
                           ffn=FFN)
  cfg, params = llama_refs.our_params(hf)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
  lm = LanguageModel(cfg, jax.device_put(params, jax.devices()[0]), mesh=mesh)
  return hf, lm, sum(p.numel() for p in hf.parameters())


def train_steps(hf, lm: LanguageModel, n_params: int, batch: int, seq: int) -> tuple:
  """(JAX step, PyTorch step, model FLOPs a step, the JAX step lowered): forward + backward of
  the next-token loss on the same random tokens; FLOPs are 6 N per token plus attention's full
  T x T."""
  tokens = np.random.default_rng(0).integers(0, VOCAB, (batch, seq)).astype(np.int32)

  def loss(p, t):
    logits, _ = Llama(lm.config).apply(p, t)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], t[:, 1:]).mean()

  grad_fn = jax.jit(jax.value_and_grad(loss))
  jt = jnp.asarray(tokens)
  tt = torch.as_tensor(tokens, dtype=torch.long)

  def torch_step():
    hf.zero_grad(set_to_none=True)
    hf(tt, labels=tt).loss.backward()

  n_tokens = batch * seq
  flops = 6 * n_params * n_tokens + 12 * LAYERS * DIM * seq * n_tokens
  return (lambda: jax.block_until_ready(grad_fn(lm.params, jt)), torch_step, flops,
          grad_fn.lower(lm.params, jt))


def prompts(batch: int) -> list[list[int]]:
  """`batch` distinct 31-token prompts."""
  return [[1] + list(range(10 + i, 40 + i)) for i in range(batch)]


def jax_greedy(model: LanguageModel, batch: int, new: int):
  """A call decoding `new` tokens greedily for each of `prompts(batch)`."""
  return lambda: model.generate_ids(prompts(batch), max_new_tokens=new, eos_id=None)


def torch_greedy(hf, batch: int, new: int):
  """HF's greedy generate of the same prompts, exactly `new` tokens each."""
  ids = torch.tensor(prompts(batch))

  def call():
    with torch.no_grad():
      hf.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  eos_token_id=None, pad_token_id=0)
  return call


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--json", help="write the ratios, MFU and roofline fractions here")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())

  hf, lm, n_params = models()
  cfg, mesh = lm.config, lm.mesh
  print(f"model: {n_params / 1e6:.0f}M params, dim {DIM}, {LAYERS} layers, vocab {VOCAB}; "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.devices()[0].platform}), "
        f"torch {torch.__version__}")

  jax_step, torch_step, flops, _ = train_steps(hf, lm, n_params, args.batch, args.seq)
  jax_train = timed(jax_step, args.steps)
  torch_train = timed(torch_step, args.steps)
  n_tokens = args.batch * args.seq
  peak = matmul_peak()
  bandwidth = memory_bandwidth()

  # Greedy decoding.
  quantized = {"": lm, **{f" {s}": LanguageModel(cfg, {"params": quantize_llm(lm.params["params"], s)},
                                                  mesh=mesh) for s in ("int8", "int4")}}
  rows = {}
  for batch in (1, 8):
    new = args.new_tokens
    torch_s = timed(torch_greedy(hf, batch, new), 2)
    for name, model in quantized.items():
      jax_s = timed(jax_greedy(model, batch, new), 2)
      rows[f"greedy decode{name}, batch {batch}"] = (batch * new / jax_s, batch * new / torch_s)

  print(f"\nmeasured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
  print(f"{'workload':<28}{'JAX tok/s':>12}{'PyTorch tok/s':>15}{'JAX/PyTorch':>13}")
  print(f"{'train step (fwd+bwd)':<28}{n_tokens / jax_train:>12.0f}{n_tokens / torch_train:>15.0f}"
        f"{torch_train / jax_train:>13.2f}")
  for name, (j, t) in rows.items():
    print(f"{name:<28}{j:>12.1f}{t:>15.1f}{j / t:>13.2f}")
  print(f"\ntrain step MFU (JAX): {flops / jax_train / peak:.1%}; "
        f"(PyTorch: {flops / torch_train / peak:.1%})")
  roofline = {b: decode_roofline(n_params, b, 31, args.new_tokens, bandwidth) for b in (1, 8)}
  print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s; greedy decode roofline: batch 1 "
        f"{roofline[1]:.0f} tok/s, batch 8 {roofline[8]:.0f} tok/s")
  for b in (1, 8):
    j, t = rows[f"greedy decode, batch {b}"]
    print(f"  batch {b}: JAX {j / roofline[b]:.1%} of the roofline, PyTorch {t / roofline[b]:.1%}")
  if args.json:
    summary = {"train_ratio": torch_train / jax_train,
               "decode_b1_ratio": rows["greedy decode, batch 1"][0] / rows["greedy decode, batch 1"][1],
               "decode_b8_ratio": rows["greedy decode, batch 8"][0] / rows["greedy decode, batch 8"][1],
               "train_mfu": flops / jax_train / peak,
               "decode_b1_roofline": rows["greedy decode, batch 1"][0] / roofline[1],
               "decode_b8_roofline": rows["greedy decode, batch 8"][0] / roofline[8],
               "matmul_peak_flops": peak, "memory_bandwidth": bandwidth}
    with open(args.json, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
