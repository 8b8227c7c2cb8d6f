"""The GPU paths in one short run (< 8 minutes on one H100/H200), printed as one table:

  1. attention: the cuDNN kernel (models.attention 'cudnn') against the XLA path, bf16, padded
     rows, forward and gradients (tolerance 2e-2 of the largest value: bf16's 8 mantissa bits);
  2. the tiny SPHINX's logits on the accelerator in bf16 against CPU fp32 (same 2e-2 bound);
  3. the MFU of a ~1B-parameter LLaMA train step in bf16 against the measured bf16 matmul peak;
  4. greedy decoding tokens/s of that model at batch 1 and 64 against the memory-bandwidth
     roofline (bf16 weights + the KV cache read once per token, over a measured large copy).

Without a GPU it runs a reduced form on the CPU (tiny sizes, the splash kernel in Pallas interpret
mode in place of cuDNN) so the script cannot rot; the test suite runs that form.

  python bench/gpu_check.py [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sphinx_jax.configs import LlamaConfig, sphinx_preset  # noqa: E402
from sphinx_jax.inference.generate import generate  # noqa: E402
from sphinx_jax.inference.sampling import Sampling  # noqa: E402
from sphinx_jax.models import attention, sphinx  # noqa: E402
from sphinx_jax.models.llama import Llama, init_cache, init_params  # noqa: E402

BF16_BOUND = 2e-2  # relative to the largest value


def timed(fn, repeats: int = 3) -> float:
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - start)
  return best


def rel_diff(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def check_attention(gpu: bool) -> dict:
  b, t, h, kv, d = (4, 1024, 16, 8, 128) if gpu else (2, 128, 4, 2, 16)
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.bfloat16)
             for s in ((b, t, h, d), (b, t, kv, d), (b, t, kv, d)))
  seg = np.ones((b, t), np.int32)
  seg[0, t // 2:] = 0  # one padded row
  seg = jnp.asarray(seg)
  impl = "cudnn" if gpu else "splash"  # on CPU: the TPU kernel in Pallas interpret mode

  def loss(q, k, v, impl):
    return jnp.sum(attention.attend(q, k, v, seg, impl).astype(jnp.float32) * (seg > 0)[..., None, None])

  fast = jax.jit(jax.value_and_grad(lambda *a: loss(*a, impl), argnums=(0, 1, 2)))
  ref = jax.jit(jax.value_and_grad(lambda *a: loss(*a, "xla"), argnums=(0, 1, 2)))
  attend = jax.jit(attention.attend, static_argnums=4)  # eager Pallas interpret mode crawls
  out_fast = attend(q, k, v, seg, impl)
  out_ref = attend(q, k, v, seg, "xla")
  real = np.asarray(seg > 0)
  fwd = rel_diff(np.asarray(out_fast, np.float32)[real], np.asarray(out_ref, np.float32)[real])
  grads = max(rel_diff(a, b_) for a, b_ in zip(fast(q, k, v)[1], ref(q, k, v)[1]))
  return {"check": f"attention {impl} vs xla (bf16)", "value": max(fwd, grads),
          "bound": BF16_BOUND, "ok": max(fwd, grads) <= BF16_BOUND}


def check_sphinx_logits() -> dict:
  cfg = sphinx_preset("tiny")
  params = jax.jit(lambda key: nn.unbox(sphinx.init_params(cfg, key)))(jax.random.key(0))
  rng = np.random.default_rng(1)
  k = cfg.image_tokens
  tokens = rng.integers(3, cfg.llm.vocab_size, (2, k + 16)).astype(np.int32)
  mask = np.zeros_like(tokens, bool)
  mask[:, 1:1 + k] = True
  images = {name: rng.standard_normal((2, 1, cfg.n_views, s, s, 3)).astype(np.float32)
            for name, s in cfg.view_sizes.items()}
  cpu = jax.devices("cpu")[0]
  with jax.default_device(cpu):
    ref = jax.jit(lambda p: sphinx.SphinxNet(cfg).apply(p, tokens, mask, images)[0])(
        jax.device_put(params, cpu))
  bf16 = cfg.with_tower_dtypes("float32", "bfloat16")
  bf16 = bf16.replace(llm=bf16.llm.replace(dtype="bfloat16"))
  out = jax.jit(lambda p: sphinx.SphinxNet(bf16).apply(p, tokens, mask, images)[0])(params)
  diff = rel_diff(out, ref)
  return {"check": f"tiny SPHINX logits, {jax.default_backend()} bf16 vs CPU fp32",
          "value": diff, "bound": BF16_BOUND, "ok": diff <= BF16_BOUND}


def matmul_peak(dtype, n: int) -> float:
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / timed(lambda: f(a), 5)


def bandwidth(n: int) -> float:
  a = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda x: x * 2)  # reads and writes n floats
  return 8 * n / timed(lambda: f(a), 5)


def llama_checks(gpu: bool) -> list[dict]:
  if gpu:  # ~1.1B parameters: TinyLlama's shape
    cfg = LlamaConfig(vocab_size=32000, dim=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                      ffn_dim=5632, max_seq_len=2048, param_dtype="bfloat16", dtype="bfloat16",
                      attention="cudnn", remat_policy="dots_no_batch")
    rows, length, prompt, new, n = 8, 2048, 128, 64, 8192
  else:
    cfg = LlamaConfig(vocab_size=512, dim=128, n_layers=2, n_heads=4, ffn_dim=256,
                      max_seq_len=256, param_dtype="bfloat16", dtype="bfloat16")
    rows, length, prompt, new, n = 2, 128, 16, 8, 512
  params = jax.jit(lambda key: nn.unbox(init_params(cfg, key)))(jax.random.key(0))
  n_params = sum(x.size for x in jax.tree.leaves(params))
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (rows, length)),
                       jnp.int32)

  def loss(p):
    logits, _ = Llama(cfg).apply(p, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

  step = jax.jit(jax.value_and_grad(loss))
  seconds = timed(lambda: step(params))
  flops = (6 * n_params + 12 * cfg.n_layers * cfg.dim * length) * rows * length
  peak = matmul_peak(jnp.bfloat16, n)
  out = [{"check": f"LLaMA {n_params / 1e6:.0f}M train step bf16: MFU of the bf16 matmul peak "
                   f"({peak / 1e12:.2f} TFLOP/s)", "value": flops / seconds / peak,
          "bound": None, "ok": True}]
  bw = bandwidth(n * n)
  for batch in (1, 64):
    ids = jnp.asarray(np.random.default_rng(batch).integers(3, cfg.vocab_size, (batch, prompt)),
                      jnp.int32)
    lengths = jnp.full((batch,), prompt, jnp.int32)
    run = jax.jit(lambda p, ids, lengths: generate(
        Llama(cfg), p, {"tokens": ids}, lengths, jax.random.key(0),
        cache=init_cache(cfg, batch, prompt + new), max_new_tokens=new, sampling=Sampling(),
        eos_id=None, stop_sequences=()))
    tok_s = batch * new / timed(lambda: run(params, ids, lengths))
    cache = batch * 2 * cfg.n_layers * cfg.kv_heads * cfg.head_dim * 2 * (prompt + new / 2)
    roofline = batch * bw / (2 * n_params + cache)
    out.append({"check": f"greedy decode batch {batch}: {tok_s:.0f} tok/s, of the roofline "
                         f"{roofline:.0f} ({bw / 1e9:.0f} GB/s)", "value": tok_s / roofline,
                "bound": None, "ok": True})
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", help="write the table here")
  args = parser.parse_args()
  gpu = jax.default_backend() == "gpu"
  print(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
        + ("" if gpu else ": no GPU, the reduced CPU form"))
  rows = [check_attention(gpu), check_sphinx_logits(), *llama_checks(gpu)]
  print(f"{'check':<78}{'value':>10}{'bound':>9}  ok")
  for r in rows:
    bound = "" if r["bound"] is None else f"{r['bound']:.0e}"
    print(f"{r['check']:<78}{r['value']:>10.3g}{bound:>9}  {'yes' if r['ok'] else 'NO'}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"backend": jax.default_backend(), "rows": rows}, f, indent=1)
  if not all(r["ok"] for r in rows):
    sys.exit(1)


if __name__ == "__main__":
  main()
