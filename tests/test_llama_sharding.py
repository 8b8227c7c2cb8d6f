"""Sharded forward and gradient equal the single-device ones on 8 fake CPU devices."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sphinx_jax import sharding
from sphinx_jax.configs import LlamaConfig
from sphinx_jax.models.llama import Llama, init_params

CFG = LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=4, multiple_of=32)


def _loss(params, tokens):
  logits, _ = Llama(CFG).apply(params, tokens)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()


def _forward_and_grad(params, tokens):
  logits, _ = Llama(CFG).apply(params, tokens)
  return logits, jax.grad(_loss)(params, tokens)


@pytest.fixture(scope="module")
def reference():
  params = jax.jit(lambda k: nn.unbox(init_params(CFG, k)))(jax.random.key(0))
  params = jax.device_put(jax.tree.map(np.asarray, params), jax.devices()[0])
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 24)), jnp.int32)
  logits, grads = jax.jit(_forward_and_grad)(params, tokens)
  return params, tokens, np.asarray(logits), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (1, 2, 4)])
def test_sharded_equals_single_device(reference, shape):
  params, tokens, ref_logits, ref_grads = reference
  mesh = sharding.make_mesh(sharding.MeshConfig(*shape))
  abstract, shardings = sharding.param_shardings(lambda k: init_params(CFG, k), mesh,
                                                 jax.random.key(0))
  sharded = jax.device_put(params, shardings)
  for leaf, spec in zip(jax.tree.leaves(sharded), jax.tree.leaves(
      shardings, is_leaf=lambda s: isinstance(s, jax.sharding.NamedSharding))):
    axes = [a for dim in spec.spec if dim for a in ((dim,) if isinstance(dim, str) else dim)]
    factor = math.prod(mesh.shape[a] for a in axes)
    assert leaf.addressable_shards[0].data.nbytes * factor == leaf.nbytes
  batch = sharding.batch_sharding(mesh, 2)
  with sharding.use_mesh(mesh):
    logits, grads = jax.jit(_forward_and_grad, in_shardings=(shardings, batch))(
        sharded, jax.device_put(tokens, batch))
  logit_diff = np.abs(np.asarray(logits) - ref_logits).max()
  grad_diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(),
                                               grads, ref_grads)))
  print(f"mesh {shape}: max logit diff {logit_diff:.1e}, max grad diff {grad_diff:.1e}")
  assert logit_diff < 1e-5 and grad_diff < 1e-5


def test_sharded_init_never_materialises_whole():
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 8, 1))
  params, _ = sharding.sharded_init(lambda k: init_params(CFG, k), mesh, jax.random.key(0))
  w1 = params["params"]["layers"]["feed_forward"]["w1"]
  assert w1.sharding.spec[1] == "fsdp"
  assert w1.addressable_shards[0].data.shape == (2, 8, CFG.hidden_dim)


def test_mesh_errors_are_clear():
  with pytest.raises(ValueError, match="needs 12 devices, but 8"):
    sharding.make_mesh(sharding.MeshConfig(3, 4, 1))
  with pytest.raises(ValueError, match="not a multiple of 3"):
    sharding.make_mesh(sharding.MeshConfig(3, -1, 1))
  odd = CFG.replace(n_heads=2, n_kv_heads=2)
  mesh = sharding.make_mesh(sharding.MeshConfig(1, 2, 4))
  with pytest.raises(ValueError, match=r"attention.*w[kq].*not divisible by mesh axes \('tensor',\)"):
    sharding.sharded_init(lambda k: init_params(odd, k), mesh, jax.random.key(0))


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1)])
def test_splash_attention_sharded_equals_xla_single_device(shape):
  """The splash kernel (interpret mode) inside shard_map over rows and KV heads, packed rows:
  logits and gradients equal the XLA path on one device."""
  cfg = LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32)
  params = jax.device_put(jax.jit(lambda k: nn.unbox(init_params(cfg, k)))(jax.random.key(0)),
                          jax.devices()[0])
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 256, (8, 128)), jnp.int32)
  segments = np.ones((8, 128), np.int32)
  segments[::2, 50:] = 2
  segments[1::4, 100:] = 0

  def forward_and_grad(params, tokens, segments, attention):
    model = Llama(cfg.replace(attention=attention))
    loss = lambda p: model.apply(p, tokens, segment_ids=segments)[0][..., 0].sum()  # noqa: E731
    return model.apply(params, tokens, segment_ids=segments)[0], jax.grad(loss)(params)

  ref_logits, ref_grads = jax.jit(forward_and_grad, static_argnums=3)(params, tokens, segments,
                                                                       "xla")
  mesh = sharding.make_mesh(sharding.MeshConfig(*shape))
  _, shardings = sharding.param_shardings(lambda k: init_params(cfg, k), mesh, jax.random.key(0))
  batch = sharding.batch_sharding(mesh, 2)
  with sharding.use_mesh(mesh):
    logits, grads = jax.jit(forward_and_grad, static_argnums=3,
                            in_shardings=(shardings, batch, batch))(
        jax.device_put(params, shardings), jax.device_put(tokens, batch),
        jax.device_put(jnp.asarray(segments), batch), "splash")
  real = segments > 0
  assert np.abs(np.asarray(logits) - np.asarray(ref_logits))[real].max() < 1e-5
  relative = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max() / np.abs(b).max()),
                          grads, ref_grads)
  assert max(jax.tree.leaves(relative)) < 1e-5, relative
