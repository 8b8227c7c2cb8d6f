"""PyTorch references for the vision tests: random HF towers and the other libraries' names.

The name mappings (HF -> open_clip / dinov2 hub / timm) are written out here, independently of
our converters, so a converter test can fail.
"""
import numpy as np
import torch


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Random weights everywhere (HF inits LayerNorms to 1/0 and layerscales to constants)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * 0.15
      p.copy_(noise + 1.0 if p.ndim == 1 and name.endswith("weight") else noise)
  return module.eval()


def numpy_state(module: torch.nn.Module, prefix: str = "") -> dict:
  return {prefix + k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)


def nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x).permute(0, 3, 1, 2)


def open_clip_names(sd: dict, depth: int) -> dict:
  """HF CLIPVisionModel tensors under open_clip's names, plus leftovers SPHINX keeps."""
  out = {"visual.conv1.weight": sd["embeddings.patch_embedding.weight"],
         "visual.class_embedding": sd["embeddings.class_embedding"],
         "visual.positional_embedding": sd["embeddings.position_embedding.weight"],
         "visual.proj": np.ones((sd["embeddings.class_embedding"].size, 8), np.float32),
         "token_embedding.weight": np.zeros((10, 8), np.float32), "logit_scale": np.ones(())}
  for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
    for p in ("weight", "bias"):
      out[f"visual.{ours}.{p}"] = sd[f"{theirs}.{p}"]
  for i in range(depth):
    hf, oc = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
    for p in ("weight", "bias"):
      out[oc + ("attn.in_proj_weight" if p == "weight" else "attn.in_proj_bias")] = \
          np.concatenate([sd[f"{hf}self_attn.{n}_proj.{p}"] for n in "qkv"])
      for ours, theirs in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                           ("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"),
                           ("mlp.c_proj", "mlp.fc2")):
        out[f"{oc}{ours}.{p}"] = sd[f"{hf}{theirs}.{p}"]
  return out


def dinov2_hub_names(sd: dict, depth: int) -> dict:
  """HF Dinov2Model (SwiGLU) tensors under the torch.hub dinov2 names."""
  out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
         "mask_token": sd["embeddings.mask_token"],
         "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
         "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
         "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
  for i in range(depth):
    hf, hub = f"encoder.layer.{i}.", f"blocks.{i}."
    out[hub + "ls1.gamma"] = sd[hf + "layer_scale1.lambda1"]
    out[hub + "ls2.gamma"] = sd[hf + "layer_scale2.lambda1"]
    for p in ("weight", "bias"):
      out[f"{hub}attn.qkv.{p}"] = np.concatenate(
          [sd[f"{hf}attention.{n}_proj.{p}"] for n in "qkv"])
      out[f"{hub}mlp.w12.{p}"] = np.concatenate(
          [sd[f"{hf}mlp.gate_proj.{p}"], sd[f"{hf}mlp.up_proj.{p}"]])
      for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2"),
                           ("attn.proj", "attention.o_proj"), ("mlp.w3", "mlp.down_proj")):
        out[f"{hub}{ours}.{p}"] = sd[f"{hf}{theirs}.{p}"]
  return out


def timm_names(sd: dict, depths: tuple[int, ...]) -> dict:
  """HF ConvNextModel tensors under timm's names (open_clip's `visual.trunk.`)."""
  renames = [("embeddings.patch_embeddings", "stem.0"), ("embeddings.layernorm", "stem.1")]
  for s, depth in enumerate(depths):
    renames += [(f"encoder.stages.{s}.downsampling_layer.{n}", f"stages.{s}.downsample.{n}")
                for n in (0, 1)]
    for j in range(depth):
      hf, timm = f"encoder.stages.{s}.layers.{j}.", f"stages.{s}.blocks.{j}."
      renames += [(hf + a, timm + b) for a, b in (
          ("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"),
          ("pwconv2", "mlp.fc2"), ("layer_scale_parameter", "gamma"))]
  renames.append(("layernorm", "head.norm"))
  out = {}
  for key, value in sd.items():
    new = next(t + key[len(h):] for h, t in renames if key == h or key.startswith(h + "."))
    out["visual.trunk." + new] = value
  return out
