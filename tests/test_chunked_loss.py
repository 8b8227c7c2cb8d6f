"""The chunked loss (`TrainConfig.loss_chunk`, models.loss.chunked_loss_sums) is the loss: the
same sums, gradients and train steps as the full [B, T, V] logits, for chunks that do and do not
divide the sequence, with images, padding, both weightings and several sources, on 8 devices."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from sphinx_jax import sharding
from sphinx_jax.configs import sphinx_preset
from sphinx_jax.models import sphinx as sphinx_model
from sphinx_jax.models.loss import chunked_loss_sums, loss_sums
from sphinx_jax.train import config as train_config
from sphinx_jax.train import optimizer
from sphinx_jax.train import step as train_step

CFG = sphinx_preset("tiny")


def _batch(rows=8, length=48, seed=0):
  rng = np.random.default_rng(seed)
  k = CFG.image_tokens
  image_mask = np.zeros((rows, length), bool)
  image_mask[::2, 1:1 + k] = True  # every other row has an image
  valid = np.ones((rows, length), bool)
  valid[:, length - 5:] = False  # padding at the end
  loss_mask = ~image_mask & (rng.random((rows, length)) < 0.7)
  return {"tokens": rng.integers(3, 512, (rows, length)).astype(np.int32),
          "image_mask": image_mask, "loss_mask": loss_mask, "valid": valid,
          "segment_ids": valid.astype(np.int32),
          "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)),
          "source_id": np.repeat((np.arange(rows) % 3)[:, None], length, 1).astype(np.int32),
          "images": {name: rng.standard_normal((rows, 1, 1, s, s, 3)).astype(np.float32)
                     for name, s in CFG.view_sizes.items()}}


@pytest.fixture(scope="module")
def head_inputs():
  """The tiny SPHINX's final hidden states of `_batch()` (images, padding) and its params."""
  params = nn.unbox(sphinx_model.init_params(CFG, jax.random.key(1)))
  batch = _batch()
  hidden, _ = jax.jit(lambda p, b: sphinx_model.SphinxNet(CFG).apply(
      p, b["tokens"], b["image_mask"], b["images"], segment_ids=b["segment_ids"],
      head=False))(params, batch)
  return params, batch, hidden


@pytest.mark.parametrize("chunk", [7, 64])  # several chunks; one chunk longer than T
@pytest.mark.parametrize("weighting", ["token", "sample"])
def test_chunked_sums_and_gradients_equal_the_full_loss(head_inputs, chunk, weighting):
  """Sums, and gradients with respect to the hidden states and the head's kernel: every other
  parameter's gradient is these by the chain rule, so they are equal iff these are."""
  params, batch, hidden = head_inputs
  net = sphinx_model.SphinxNet(CFG)

  def full(h, kernel):
    p = {"params": {**params["params"], "llm": {**params["params"]["llm"],
                                                 "output": {"kernel": kernel}}}}
    sums = loss_sums(net.apply(p, h, method="head"), batch, weighting, 3)
    return sums["sum"], sums

  def chunked(h, kernel):
    sums = chunked_loss_sums(h, kernel, batch, weighting, 3, chunk)
    return sums["sum"], sums

  kernel = params["params"]["llm"]["output"]["kernel"]
  (grads_a, sums_a), (grads_b, sums_b) = (jax.jit(jax.grad(f, (0, 1), has_aux=True))(hidden, kernel)
                                          for f in (full, chunked))
  for key in sums_a:
    np.testing.assert_allclose(sums_b[key], sums_a[key], rtol=1e-6, atol=1e-6, err_msg=key)
  diff = max(float(np.abs(a - b).max()) for a, b in zip(grads_a, grads_b))
  scale = max(float(np.abs(a).max()) for a in grads_a)
  print(f"chunk {chunk}, {weighting}: loss {sums_a['sum']:.6f} vs {sums_b['sum']:.6f}; max grad "
        f"diff {diff:.2e} (largest grad {scale:.2e})")
  assert diff <= 1e-5 * max(scale, 1.0)


def test_train_steps_with_a_chunked_loss_equal_the_full_loss_on_8_devices():
  trainable = ("llm", "mixer")
  tx = optimizer.make(train_config.OptimConfig(lr=1e-2, warmup_steps=0), 3)
  mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
  _, shardings = train_step.abstract_state(CFG, tx, trainable, mesh)
  batch = _batch()
  out = {}
  for chunk in (None, 20):
    state = train_step.init_state(CFG, tx, trainable, shardings)
    step = train_step.jit_train_step(
        train_step.make_train_step(CFG, tx, trainable, micro_batches=2, num_sources=3,
                                   loss_chunk=chunk),
        shardings, sharding.batch_shardings(batch, mesh), mesh)
    metrics = []
    with sharding.use_mesh(mesh):
      for _ in range(3):
        state, m = step(state, batch)
        metrics.append((float(m["loss"]), float(m["grad_norm"])))
    out[chunk] = np.array(metrics)
  print("full vs chunked (loss, grad norm) per step:", out[None].tolist(), out[20].tolist())
  # (parameters are not compared: Adam's first steps turn float noise in near-zero gradients
  # into lr-sized differences; the gradients themselves are compared above)
  np.testing.assert_allclose(out[20], out[None], rtol=1e-5)
