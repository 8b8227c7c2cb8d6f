"""Stage 0, the towers' own pre-training: its losses by hand, its geometry, its data, and that its
towers drop into a SPHINX params tree."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sphinx_jax.configs import TextConfig, sphinx_preset
from sphinx_jax.data import pairs, synthetic
from sphinx_jax.data.image import VIEW_PLANS
from sphinx_jax.data.skips import SkipLog
from sphinx_jax.models import sphinx as sphinx_model
from sphinx_jax.models.text_encoder import TextEncoder
from sphinx_jax.models.tower_pretraining import (TOWERS, TowerPretraining, cell_weights,
                                                 contrastive_loss, region_loss)
from sphinx_jax.models.vision.convnext import DepthwiseConv
from tests import data_fixtures as fx


def test_contrastive_loss_by_hand():
  a = jnp.eye(3)
  loss, acc = contrastive_loss(a, a, jnp.float32(1.0))
  row = -np.log(np.e / (np.e + 2))  # softmax over [1, 0, 0]
  np.testing.assert_allclose(loss, row, rtol=1e-6)
  assert acc == 1.0
  # A hard negative equal to image 0 takes half of image 0's mass (image -> text only).
  loss, acc = contrastive_loss(a, jnp.concatenate([a, a[:1]]), jnp.float32(1.0))
  row0 = -np.log(np.e / (2 * np.e + 2))
  other = -np.log(np.e / (np.e + 3))  # the negative is a 4th candidate for rows 1, 2
  np.testing.assert_allclose(loss, ((row0 + 2 * other) / 3 + row) / 2, rtol=1e-6)
  # Identical captions are positives of each other: rows 0 and 1 share their targets.
  b = jnp.stack([a[0], a[0], a[2]])
  same = jnp.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
  _, acc = contrastive_loss(b, b, jnp.float32(10.0), same)
  assert acc == 1.0


def test_region_loss_by_hand():
  regions = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
  phrases = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  same = jnp.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
  valid = jnp.array([True, True, False])  # the third phrase is padding: no candidate
  loss, acc = region_loss(regions, jnp.array([True, True, False]), phrases, valid, same,
                          jnp.float32(1.0))
  expected = -np.log(np.e / (np.e + 1))  # each valid region: its phrase against one other
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert acc == 1.0


def test_cell_weights_share_a_box_by_area():
  w = cell_weights(jnp.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]]), 2)
  np.testing.assert_allclose(w[0], [[1, 0], [0, 0]])
  np.testing.assert_allclose(w[1], [[0.5, 0.5], [0, 0]])


def test_crop_boxes_move_into_the_crop_and_say_what_is_inside():
  plan = VIEW_PLANS["mini_1k"]  # crops 1..4: top-left, top-right, bottom-left, bottom-right
  boxes = np.array([[[0.1, 0.1, 0.3, 0.3], [0.6, 0.1, 0.8, 0.3], [0.4, 0.1, 0.6, 0.3]]])
  moved, inside = pairs.crop_boxes(boxes, plan, np.array([1]))
  np.testing.assert_allclose(moved[0, 0], [0.2, 0.2, 0.6, 0.6])
  assert inside[0].tolist() == [True, False, True]  # half of the third box is in the crop
  moved, inside = pairs.crop_boxes(boxes, plan, np.array([2]))
  np.testing.assert_allclose(moved[0, 1], [0.2, 0.2, 0.6, 0.6])
  assert inside[0].tolist() == [False, True, True]
  same, inside = pairs.crop_boxes(boxes, plan, np.array([0]))
  np.testing.assert_allclose(same, boxes)
  assert inside.all()


def test_depthwise_conv_equals_a_grouped_convolution():
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 5))
  conv = DepthwiseConv(5, 7, "float32", "float32")
  params = nn.unbox(conv.init(jax.random.key(1), x))
  kernel, bias = params["params"]["kernel"], params["params"]["bias"]
  bias = bias + jax.random.normal(jax.random.key(2), bias.shape)
  reference = jax.lax.conv_general_dilated(
      x, kernel, (1, 1), [(3, 3), (3, 3)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=5, precision="highest") + bias
  out = conv.apply({"params": {"kernel": kernel, "bias": bias}}, x)
  np.testing.assert_allclose(out, reference, atol=1e-5)


def test_text_encoder_ignores_padding():
  enc = TextEncoder(TextConfig(vocab_size=32, max_len=8, width=16, n_heads=2, mlp_dim=32))
  tokens = jnp.array([[3, 4, 5, 0, 0, 0], [3, 4, 5, 9, 9, 9]])
  valid = jnp.array([[1, 1, 1, 0, 0, 0]] * 2, bool)
  params = enc.init(jax.random.key(0), tokens, valid)
  out = enc.apply(params, tokens, valid)
  np.testing.assert_allclose(out[0], out[1], atol=1e-6)
  with pytest.raises(ValueError, match="max_len"):
    enc.apply(params, jnp.zeros((1, 9), jnp.int32), jnp.ones((1, 9), bool))


@pytest.mark.parametrize("preset", ["mini", "tiny", "sphinx_tiny"])
def test_towers_have_the_sphinx_names_and_shapes(preset):
  cfg = sphinx_preset(preset)
  net = TowerPretraining(cfg, TextConfig(vocab_size=64, max_len=8, width=16, mlp_dim=32))
  s, t = cfg.dinov2.image_size, cfg.convnext_size
  batch = {"vit": jnp.zeros((1, 2, s, s, 3)), "convnext": jnp.zeros((1, 2, t, t, 3)),
           "dino": jnp.zeros((1, 2, s, s, 3)), "text": jnp.zeros((1, 4), jnp.int32),
           "text_valid": jnp.ones((1, 4), bool), "negatives": jnp.zeros((1, 1, 4), jnp.int32),
           "negatives_valid": jnp.ones((1, 1, 4), bool),
           "phrases": jnp.zeros((1, 1, 4), jnp.int32), "phrases_valid": jnp.ones((1, 1, 4), bool),
           "boxes": jnp.ones((1, 2, 1, 4)), "region_valid": jnp.ones((1, 2, 1), bool)}
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)  # noqa: E731
  ours = shapes(jax.eval_shape(lambda: nn.unbox(net.init(jax.random.key(0), batch)))["params"])
  theirs = shapes(jax.eval_shape(lambda: nn.unbox(sphinx_model.init_params(
      cfg, jax.random.key(0))))["params"])
  towers = [k for k in TOWERS if k in theirs]
  assert towers and {k: ours[k] for k in towers} == {k: theirs[k] for k in towers}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("world")
  synthetic.write_world(root, 24, 4, seed=1)
  return root


def config(world, **kw):
  spec = synthetic.sources(world, "train")["towers"]
  return pairs.PairsConfig(tokenizer=str(world / "tokenizer.model"),
                           **{"sources": (spec,), "batch_size": 8, "negatives": 2, "text_len": 56, "threads": 1,
                              **kw})


def test_pair_batches_hold_views_captions_negatives_and_regions(world):
  batch = next(iter(pairs.batches(config(world), SkipLog())))
  assert batch["vit"].shape == (8, 2, 100, 100, 3) and batch["dino"].shape == (8, 2, 100, 100, 3)
  assert batch["negatives"].shape == (8, 2, 56) and batch["phrases"].shape == (8, 5, 8)
  assert batch["boxes"].shape == (8, 2, 5, 4) and batch["region_valid"].shape == (8, 2, 5)
  assert batch["region_valid"][:, 0].any(axis=1).all()  # every scene has an object
  # crops show part of the image: never more regions than the global view
  assert (batch["region_valid"][:, 1] <= batch["region_valid"][:, 0]).all()
  assert (batch["text"][:, 0] == 1).all()  # BOS
  assert not np.array_equal(batch["text"], batch["negatives"][:, 0])


def test_bad_pair_records_are_skipped_and_named(world, tmp_path):
  good = json.loads((world / "train" / "towers.jsonl").read_text().splitlines()[0])
  records = [good, dict(good, negatives="not a list"),
             dict(good, regions=[{"phrase": "x", "box": [0, 0, 500, 5]}]),
             dict(good, image="missing.png")]
  path = fx.write_jsonl(tmp_path / "pairs.jsonl", records)
  spec = pairs.Pairs(str(path), image_root=str(world / "train"))
  skips = SkipLog()
  batch = next(iter(pairs.batches(config(world, sources=(spec,)), skips)))
  assert len(batch["text"]) == 8 and len(skips) == 3
  summary = skips.summary()
  assert "pairs.jsonl" in summary and "not a list" in summary and "outside" in summary
