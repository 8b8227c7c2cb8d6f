"""LLaMA decoder against HF LlamaForCausalLM (fp32, CPU): logits, generation, compile time."""
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sphinx_jax import LanguageModel
from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models.llama import Llama, init_params
from tests import llama_refs


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def hf_and_ours(request):
  model = llama_refs.hf_llama(kv_heads=request.param)
  cfg, params = llama_refs.our_params(model)
  return model, LanguageModel(cfg, params)


def test_logits_equal_hf(hf_and_ours):
  model, lm = hf_and_ours
  ids = np.random.default_rng(1).integers(0, 256, 37).tolist()
  ref = llama_refs.hf_logits(model, ids)
  ours = lm.logits(ids)
  diff = np.abs(ours - ref).max()
  print(f"max |logits - HF| ({lm.config.kv_heads} kv heads): {diff:.2e}")
  assert ours.shape == ref.shape == (37, 256)
  assert diff < 1e-4


def test_greedy_batch_equals_hf_generate(hf_and_ours):
  model, lm = hf_and_ours
  rng = np.random.default_rng(2)
  prompts = [[1] + rng.integers(3, 256, n).tolist() for n in (4, 19, 11)]
  ours = lm.generate_ids(prompts, max_new_tokens=16, eos_id=None)
  for prompt, got in zip(prompts, ours):
    with torch.no_grad():
      ref = model.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = ref[0, len(prompt):].tolist()
    print(f"prompt of {len(prompt)}: ours {got}\n{'':>14}HF   {expected}")
    assert got == expected


def test_sampling_is_seeded_and_filters_work(hf_and_ours):
  _, lm = hf_and_ours
  prompt = [1, 50, 60, 70]
  kw = dict(max_new_tokens=12, temperature=1.0, eos_id=None)
  a = lm.generate_ids(prompt, top_p=0.9, seed=3, **kw)
  b = lm.generate_ids(prompt, top_p=0.9, seed=3, **kw)
  others = [lm.generate_ids(prompt, top_p=0.9, seed=s, **kw) for s in (4, 5, 6)]
  assert a == b
  assert any(o != a for o in others)
  greedy = lm.generate_ids(prompt, max_new_tokens=12, eos_id=None)
  assert lm.generate_ids(prompt, top_p=1e-6, seed=7, **kw) == greedy  # nucleus of one token
  assert lm.generate_ids(prompt, top_k=1, seed=8, **kw) == greedy


def test_stops_at_eos_and_stop_sequence(hf_and_ours):
  _, lm = hf_and_ours
  prompt = [1, 9, 8, 7]
  free = lm.generate_ids(prompt, max_new_tokens=10, eos_id=None)
  assert lm.generate_ids(prompt, max_new_tokens=10, eos_id=free[3]) == free[:free.index(free[3])]
  stop = free[4:6]
  first = next(i for i in range(len(free) - 1) if free[i:i + 2] == stop)
  assert lm.generate_ids(prompt, max_new_tokens=10, eos_id=None,
                         stop_sequences=[stop]) == free[:first]
  assert len(lm.generate_ids(prompt, max_new_tokens=3, eos_id=None)) == 3


def test_meta_hidden_size_rule():
  sizes = {"llama2_7b": 11008, "llama2_13b": 13824, "llama2_70b": 28672, "tinyllama_1b": 5632}
  from sphinx_jax.configs import llm_preset
  for name, hidden in sizes.items():
    assert llm_preset(name).hidden_dim == hidden, name


def test_rope_scaling_divides_positions():
  cfg = LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, multiple_of=16)
  params = init_params(cfg, jax.random.key(0))
  tokens = jnp.arange(8)[None]
  scaled, _ = Llama(cfg.replace(rope_scaling=2.0)).apply(params, tokens,
                                                         positions=jnp.arange(8)[None] * 2)
  plain, _ = Llama(cfg).apply(params, tokens)
  np.testing.assert_allclose(scaled, plain, atol=1e-5)


def _compile_seconds(n_layers: int) -> float:
  cfg = LlamaConfig(vocab_size=256, dim=64, n_layers=n_layers, n_heads=4, multiple_of=32)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((2, 64), jnp.int32)
  start = time.perf_counter()
  jax.jit(lambda p, t: Llama(cfg).apply(p, t)[0]).lower(params, tokens).compile()
  return time.perf_counter() - start


def test_compile_time_does_not_grow_with_depth():
  _compile_seconds(2)  # warm up tracing caches
  rounds = [(_compile_seconds(2), _compile_seconds(16)) for _ in range(3)]  # interleaved: load
  shallow, deep = min(r[0] for r in rounds), min(r[1] for r in rounds)    # drifts hit both
  print(f"forward compile: 2 layers {shallow:.2f}s, 16 layers {deep:.2f}s "
        f"(ratio {deep / shallow:.2f})")
  assert deep < 1.5 * shallow


def _loss_and_grads(cfg, params, tokens):
  def loss(p):
    logits, _ = Llama(cfg).apply(p, tokens)
    return jax.nn.logsumexp(logits, -1).mean() - logits[..., 0].mean()
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_policy_keeps_loss_and_gradients(policy):
  cfg = LlamaConfig(vocab_size=128, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, multiple_of=16)
  params = jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(1))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 12)), jnp.int32)
  loss, grads = _loss_and_grads(cfg, params, tokens)
  loss_r, grads_r = _loss_and_grads(cfg.replace(remat_policy=policy), params, tokens)
  assert abs(float(loss) - float(loss_r)) < 1e-6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, grads_r)


def test_bf16_compute_tracks_fp32(hf_and_ours):
  model, lm = hf_and_ours
  ids = np.random.default_rng(4).integers(0, 256, 24).tolist()
  ref = llama_refs.hf_logits(model, ids)
  bf16 = LanguageModel(lm.config.replace(dtype="bfloat16"), lm.params, mesh=lm.mesh)
  logits = bf16.logits(ids)
  assert logits.dtype == np.float32
  diff = np.abs(logits - ref).max()
  print(f"bf16 compute: max |logits - HF fp32| {diff:.3f} (logit scale {np.abs(ref).max():.2f})")
  assert diff < 0.05 * np.abs(ref).max()
  assert (logits.argmax(-1) == ref.argmax(-1)).mean() > 0.9
