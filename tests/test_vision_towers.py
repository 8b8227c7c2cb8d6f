"""Vision towers against HF transformers (tiny random configs, fp32), the converters from the
names SPHINX checkpoints use (open_clip, timm, dinov2 hub), and the real towers' shapes."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from sphinx_jax import sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.checkpoints.vision_convnext import hf_convnext, timm_convnext
from sphinx_jax.checkpoints.vision_qformer import hf_blip2
from sphinx_jax.checkpoints.vision_vit import (
  dinov2_hub_vit,
  hf_blip2_vit,
  hf_clip_vit,
  hf_dinov2_vit,
  open_clip_vit,
  resize_positions,
)
from sphinx_jax.configs import (
  Blip2Config,
  ConvNextConfig,
  QFormerConfig,
  ViTConfig,
  vision_preset,
)
from sphinx_jax.models.vision.convnext import ConvNext
from sphinx_jax.models.vision.qformer import Blip2, QFormer
from sphinx_jax.models.vision.vit import ViT
from tests.vision_refs import (
  dinov2_hub_names,
  images,
  nchw,
  numpy_state,
  open_clip_names,
  randomize,
  timm_names,
)

TOL = 1e-4


@functools.cache
def _apply(module: nn.Module):
  return jax.jit(lambda params, x: module.apply({"params": params}, x))


def run(module: nn.Module, params: dict, x: np.ndarray) -> np.ndarray:
  return np.asarray(_apply(module)(params, x))


def check(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  diff = float(np.abs(ours - ref).max())
  print(f"{name}: max abs diff {diff:.2e} (reference max |x| {np.abs(ref).max():.2f})")
  assert diff < TOL


def assert_same_params(a: dict, b: dict) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ---------------------------------------------------------------------------------------------
# CLIP ViT


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_clip_matches_hf_and_open_clip_names(act):
  hf = randomize(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
      hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      image_size=16, patch_size=4, hidden_act=act)), seed=1)
  x = images(2, 16)
  with torch.no_grad():
    ref = hf.post_layernorm(hf(nchw(x)).last_hidden_state).numpy()
  sd = numpy_state(hf)
  cfg, parts = hf_clip_vit(sd, sd.__getitem__, act=act, n_heads=4)
  params = params_io.assemble(parts)["clip"]
  assert (cfg.width, cfg.depth, cfg.grid, cfg.pre_norm, cfg.patch_bias) == (32, 2, 4, True, False)
  check(f"CLIP ({act}) vs HF CLIPVisionModel", run(ViT(cfg), params, x), ref)

  oc = open_clip_names(sd, 2)
  oc_cfg, oc_parts = open_clip_vit(oc, oc.__getitem__, "visual.", act=act, n_heads=4)
  oc_params = params_io.assemble(oc_parts)["clip"]
  assert oc_cfg == cfg
  assert_same_params(oc_params, params)
  check(f"CLIP ({act}) from open_clip names", run(ViT(oc_cfg), oc_params, x), ref)


# ---------------------------------------------------------------------------------------------
# DINOv2


def dinov2_legacy_hf_names(sd: dict) -> dict:
  """The names of the dinov2 checkpoints on the HF hub (before transformers 5)."""
  renames = (("attention.q_proj", "attention.attention.query"),
             ("attention.k_proj", "attention.attention.key"),
             ("attention.v_proj", "attention.attention.value"),
             ("attention.o_proj", "attention.output.dense"), ("mlp.down_proj", "mlp.weights_out"))
  out = {}
  for key, value in sd.items():
    if ".mlp.up_proj." in key:
      continue
    if ".mlp.gate_proj." in key:
      key, value = key.replace("gate_proj", "weights_in"), np.concatenate(
          [value, sd[key.replace("gate_proj", "up_proj")]])
    for new, old in renames:
      key = key.replace(new, old)
    out[key] = value
  return out


def test_dinov2_matches_hf_and_hub_names():
  hf = randomize(transformers.Dinov2Model(transformers.Dinov2Config(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4,
      use_swiglu_ffn=True)), seed=2)
  x = images(2, 16, seed=1)
  with torch.no_grad():
    ref = hf(nchw(x)).last_hidden_state.numpy()
  sd = numpy_state(hf)
  cfg, parts = hf_dinov2_vit(sd, sd.__getitem__, n_heads=4)
  params = params_io.assemble(parts)["dinov2"]
  assert (cfg.act, cfg.mlp_dim, cfg.layerscale, cfg.pre_norm) == ("swiglu", 88, True, False)
  check("DINOv2 (SwiGLU, layerscale) vs HF Dinov2Model", run(ViT(cfg), params, x), ref)

  legacy = dinov2_legacy_hf_names(sd)
  assert_same_params(params_io.assemble(hf_dinov2_vit(legacy, legacy.__getitem__, n_heads=4)[1]),
                     {"dinov2": params})
  hub = dinov2_hub_names(sd, 2)
  hub_cfg, hub_parts = dinov2_hub_vit(hub, hub.__getitem__, grid=4, n_heads=4)
  hub_params = params_io.assemble(hub_parts)["dinov2"]
  assert hub_cfg == cfg
  check("DINOv2 from dinov2-hub names", run(ViT(hub_cfg), hub_params, x), ref)


def test_dinov2_positions_resized_like_the_hub():
  """37x37 -> 16x16 as dinov2's interpolate_pos_encoding: scale_factor (16 + 0.1) / 37."""
  pos = np.random.RandomState(3).randn(1 + 37 * 37, 8).astype(np.float32)
  grid = torch.from_numpy(pos[1:]).reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
  ref = F.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic",
                      antialias=False)
  ref = np.concatenate([pos[:1], ref.permute(0, 2, 3, 1).reshape(256, 8).numpy()])
  check("DINOv2 37x37 -> 16x16 positions vs torch", resize_positions(pos, 16, 0.1), ref)


# ---------------------------------------------------------------------------------------------
# ConvNeXt


def test_convnext_matches_hf_and_timm_names():
  depths = (1, 2, 1, 1)
  hf = randomize(transformers.ConvNextModel(transformers.ConvNextConfig(
      hidden_sizes=[8, 16, 24, 32], depths=list(depths), layer_norm_eps=1e-6)), seed=4)
  x = images(2, 64, seed=2)
  with torch.no_grad():
    feature_map = hf(nchw(x)).last_hidden_state.permute(0, 2, 3, 1)
    ref = F.layer_norm(feature_map, (32,), hf.layernorm.weight, hf.layernorm.bias,
                       hf.layernorm.eps).numpy()  # the head norm at every position
  sd = numpy_state(hf)
  cfg, parts = hf_convnext(sd, sd.__getitem__, layer_norm_eps=1e-6)
  params = params_io.assemble(parts)["convnext"]
  assert (cfg.depths, cfg.dims, cfg.norm_eps) == (depths, (8, 16, 24, 32), 1e-6)
  check("ConvNeXt vs HF ConvNextModel (+ head norm per position)",
        run(ConvNext(cfg), params, x), ref)

  timm = timm_names(sd, depths)
  timm_cfg, timm_parts = timm_convnext(timm, timm.__getitem__, norm_eps=1e-6)
  timm_params = params_io.assemble(timm_parts)["convnext"]
  assert timm_cfg == cfg
  check("ConvNeXt from timm names", run(ConvNext(timm_cfg), timm_params, x), ref)


# ---------------------------------------------------------------------------------------------
# BLIP-2


def test_blip2_matches_hf():
  vision = randomize(transformers.Blip2VisionModel(transformers.Blip2VisionConfig(
      hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      image_size=16, patch_size=4)), seed=5)
  qformer = randomize(transformers.Blip2QFormerModel(transformers.Blip2QFormerConfig(
      hidden_size=24, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
      encoder_hidden_size=32, use_qformer_text_input=True)), seed=6)  # text-path keys too
  query_tokens = torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(7))
  x = images(2, 16, seed=3)
  with torch.no_grad():
    image_embeds = vision(nchw(x)).last_hidden_state
    ref = qformer(query_embeds=query_tokens.expand(2, -1, -1),
                  encoder_hidden_states=image_embeds).last_hidden_state.numpy()
  sd = {**numpy_state(vision, "llma.qformer.vision_model."),
        **numpy_state(qformer, "llma.qformer.qformer."),
        "llma.qformer.query_tokens": query_tokens.numpy()}
  cfg, parts = hf_blip2(sd, sd.__getitem__, "llma.qformer.", vision_heads=4, qformer_heads=4)
  params = params_io.assemble(parts)["qformer"]
  assert (cfg.qformer.depth, cfg.qformer.cross_attention_frequency, cfg.qformer.n_queries) == \
      (4, 2, 5)
  check("EVA ViT vs HF Blip2VisionModel", run(ViT(cfg.vision), params["vision"], x),
        image_embeds.numpy())
  check("Q-Former vs HF Blip2QFormerModel (query tokens fed through)",
        run(QFormer(cfg.qformer), params["qformer"], image_embeds.numpy()), ref)
  check("BLIP-2 tower (EVA ViT + Q-Former)", run(Blip2(cfg), params, x), ref)


# ---------------------------------------------------------------------------------------------
# Errors


def test_unmapped_key_and_shape_mismatch_are_named():
  hf = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
      hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
      image_size=8, patch_size=4))
  oc = open_clip_names(numpy_state(hf), 2)
  extra = {**oc, "visual.attn_pool.query": np.zeros(3, np.float32)}
  with pytest.raises(ConversionError, match=r"unmapped key.*'visual\.attn_pool\.query'"):
    open_clip_vit(extra, extra.__getitem__)
  bad = {**oc, "visual.transformer.resblocks.1.mlp.c_fc.bias": np.zeros(31, np.float32)}
  _, parts = open_clip_vit(bad, bad.__getitem__, n_heads=2)
  with pytest.raises(ConversionError,
                     match=r"'visual\.transformer\.resblocks\.1\.mlp\.c_fc\.bias' has shape"):
    list(parts)
  with pytest.raises(ConversionError, match=r"no tensors under prefix 'visual\.trunk\.'"):
    timm_convnext(oc, oc.__getitem__)
  with pytest.raises(ConversionError, match="missing key"):
    hf_blip2_vit({"vision_model.embeddings.class_embedding": np.zeros((1, 1, 16))},
                 lambda k: np.zeros((1, 1, 16), np.float32))


# ---------------------------------------------------------------------------------------------
# Real sizes (shapes only)


# Parameter counts: open_clip ViT-L-14 visual 303,966,208 less `proj` (1024 x 768); dinov2_vitg14
# 1,136,480,768 less the 37x37 -> 16x16 positions and mask_token; timm convnext_xxlarge 846.47M
# less the 1000-class head; BLIP-2: EVA ViT-g 985,952,256 + Q-Former query path 105,162,240.
@pytest.mark.parametrize("name,model,size,shape,n_params", [
    ("clip_vit_l14", ViT, 224, (257, 1024), 303_179_776),
    ("convnext_xxlarge", ConvNext, 256, (8, 8, 3072), 843_398_016),
    ("dinov2_vitg14", ViT, 224, (257, 1536), 1_136_480_768 - 1113 * 1536 - 1536),
    ("blip2", Blip2, 224, (32, 768), 985_952_256 + 105_162_240),
])
def test_real_towers_shapes_and_shardings(name, model, size, shape, n_params):
  module = model(vision_preset(name))
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
  init = lambda rng, x: module.init(rng, x)
  abstract, _ = sharding.param_shardings(init, mesh, jax.random.key(0), x)  # divisibility too
  with sharding.use_mesh(mesh):
    out = jax.eval_shape(lambda p, x: module.apply(p, x), abstract, x)
  assert out.shape == (1, *shape), (name, out.shape)
  assert sum(math.prod(a.shape) for a in jax.tree.leaves(abstract)) == n_params


@pytest.mark.parametrize("model,cfg,size", [
    (Blip2, Blip2Config(ViTConfig(image_size=16, patch_size=4, width=16, depth=2, n_heads=2,
                                  mlp_dim=32, remat_policy="full"),
                        QFormerConfig(width=8, depth=2, n_heads=2, mlp_dim=16, n_queries=4,
                                      encoder_width=16)), 16),
    (ConvNext, ConvNextConfig(depths=(1, 2), dims=(8, 16)), 32),
])
def test_sharded_towers_equal_single_device(model, cfg, size):
  module = model(cfg)
  x = images(4, size, seed=4)
  params = jax.jit(lambda k: nn.unbox(module.init(k, x)))(jax.random.key(1))
  ref = run(module, params["params"], x)
  mesh = sharding.make_mesh(sharding.MeshConfig(2, 2, 2))
  _, shardings = sharding.param_shardings(lambda k: module.init(k, x), mesh, jax.random.key(1))
  batch = sharding.batch_sharding(mesh, 4)
  with sharding.use_mesh(mesh):
    out = jax.jit(module.apply, in_shardings=(shardings, batch))(
        jax.device_put(params, shardings), jax.device_put(x, batch))
  diff = float(np.abs(np.asarray(out) - ref).max())
  print(f"{model.__name__} on a (2, 2, 2) mesh: max abs diff {diff:.1e}")
  assert diff < 1e-5
