"""A PyTorch SPHINX for the tests: HF towers + LLaMA, fused the way the reference's variants do,
their view tiling, and the files of a LLaMA2-Accessory release written from them.

The fusion is written out here from the reference (llama_ens.py:351-461, llama_ens_light.py and
llama_ens5_light.py:353-425), independently of `models/mixer.py`: CLIP's ln_post on all tokens;
ConvNeXt map after the head norm, cells repeated up to the ViT grid (2x in the full variants,
none in the light ones), mean token first; DINOv2 on re-normalised pixels; [CLIP | ConvNeXt |
DINOv2] (light: [ConvNeXt | DINOv2]) -> visual_proj; Q-Former queries -> qformer_proj (none in
the light variants); per view [start, q, ens, end]; the image right after BOS; logits from the
end-of-image position on. The tiling (`reference_views`) is encode_image's, at any sizes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from sphinx_jax.configs import SphinxConfig
from sphinx_jax.models.vision.normalize import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from tests import llama_refs
from tests.vision_refs import (dinov2_hub_names, nchw, numpy_state, open_clip_names, randomize,
                               timm_names)


def reference_views(image: np.ndarray, llama_type: str, vit: int, convnext: int) -> dict:
  """encode_image's tiling (llama_ens*.py), on one preprocessed NHWC square, in torch: `vit` is
  the ViT view side (224 in the releases), `convnext` the ConvNeXt input side (256, 512)."""
  img = torch.from_numpy(image).permute(2, 0, 1)[None]
  half_bicubic = lambda t, s: F.interpolate(t.half(), size=(s, s), mode="bicubic").to(t)  # noqa
  half_nearest = lambda t, s: F.interpolate(t.half(), size=(s, s)).to(t)  # noqa: E731
  crops = lambda t, s: [t[..., y:y + s, x:x + s] for y in range(0, t.shape[-2], s)  # noqa: E731
                        for x in range(0, t.shape[-1], s)]
  if llama_type == "llama_ens":
    views = img
    cnx = half_nearest(views, convnext)
  elif llama_type in ("llama_ens5", "llama_ens10"):
    views = torch.cat([half_bicubic(img, vit)] + crops(img, vit), dim=0)
    cnx = half_nearest(views, convnext)
  elif llama_type == "llama_ens_light":
    views = half_bicubic(img, vit)
    cnx = half_nearest(img, convnext)
  elif llama_type == "llama_ens5_light":
    views = torch.stack([half_bicubic(img, vit)] + crops(half_bicubic(img, 2 * vit), vit),
                        dim=1)[0]
    cnx = torch.stack([half_bicubic(img, convnext)] + crops(img, convnext), dim=1)[0]
  else:
    raise ValueError(llama_type)
  return {"vit": views.permute(0, 2, 3, 1).numpy(), "convnext": cnx.permute(0, 2, 3, 1).numpy()}


class TorchSphinx:
  """The reference model for a tiny SphinxConfig (the `tiny*` presets' sizes); without CLIP and
  the Q-Former when the config has none (the light variants)."""

  def __init__(self, cfg: SphinxConfig, seed: int = 0):
    llm, vit, dino = cfg.llm, cfg.clip, cfg.dinov2
    self.cfg = cfg
    self.light = cfg.clip is None
    self.llm = llama_refs.hf_llama(kv_heads=llm.kv_heads, layers=llm.n_layers,
                                   vocab=llm.vocab_size, seed=seed, dim=llm.dim,
                                   heads=llm.n_heads, ffn=llm.hidden_dim)
    if not self.light:
      self.clip = randomize(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
          hidden_size=vit.width, intermediate_size=vit.mlp_dim, num_hidden_layers=vit.depth,
          num_attention_heads=vit.n_heads, image_size=vit.image_size, patch_size=vit.patch_size,
          hidden_act="gelu", layer_norm_eps=1e-5)), seed + 1)
    self.convnext = randomize(transformers.ConvNextModel(transformers.ConvNextConfig(
        hidden_sizes=list(cfg.convnext.dims), depths=list(cfg.convnext.depths),
        num_stages=len(cfg.convnext.dims), patch_size=cfg.convnext.patch_size)), seed + 2)
    for module in self.convnext.modules():  # timm's convnext uses norm_eps everywhere
      if hasattr(module, "eps"):
        module.eps = 1e-5
    self.dinov2 = randomize(transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=dino.width, num_hidden_layers=dino.depth, num_attention_heads=dino.n_heads,
        image_size=dino.image_size, patch_size=dino.patch_size, use_swiglu_ffn=True,
        layer_norm_eps=1e-6)), seed + 3)
    gen = torch.Generator().manual_seed(seed + 6)
    if not self.light:
      eva, qf = cfg.blip2.vision, cfg.blip2.qformer
      self.eva = randomize(transformers.Blip2VisionModel(transformers.Blip2VisionConfig(
          hidden_size=eva.width, intermediate_size=eva.mlp_dim, num_hidden_layers=eva.depth,
          num_attention_heads=eva.n_heads, image_size=eva.image_size, patch_size=eva.patch_size,
          layer_norm_eps=1e-6)), seed + 4)
      self.qformer = randomize(transformers.Blip2QFormerModel(transformers.Blip2QFormerConfig(
          hidden_size=qf.width, num_hidden_layers=qf.depth, num_attention_heads=qf.n_heads,
          intermediate_size=qf.mlp_dim, encoder_hidden_size=eva.width,
          cross_attention_frequency=qf.cross_attention_frequency)), seed + 5)
      self.query_tokens = torch.randn(1, qf.n_queries, qf.width, generator=gen)
      self.qformer_proj = randomize(torch.nn.Sequential(
          torch.nn.Linear(qf.width, llm.dim), torch.nn.LayerNorm(llm.dim)), seed + 8)
    ens_width = (0 if self.light else vit.width) + cfg.convnext.dims[-1] + dino.width
    self.visual_proj = randomize(torch.nn.Sequential(torch.nn.Linear(ens_width, llm.dim),
                                                     torch.nn.LayerNorm(llm.dim)), seed + 7)
    self.start_img = torch.rand(1, 1, llm.dim, generator=gen)
    self.end_img = torch.rand(1, 1, llm.dim, generator=gen)

  @torch.no_grad()
  def encode_views(self, vit: np.ndarray, convnext: np.ndarray) -> torch.Tensor:
    """[V, s, s, 3] and [V, t, t, 3] pixels -> [V, tokens_per_view, dim]."""
    x = nchw(vit)
    fmap = self.convnext(nchw(convnext)).last_hidden_state.permute(0, 2, 3, 1)
    fmap = F.layer_norm(fmap, fmap.shape[-1:], self.convnext.layernorm.weight,
                        self.convnext.layernorm.bias, 1e-5).permute(0, 3, 1, 2)
    factor = self.cfg.dinov2.grid // fmap.shape[-1]
    fmap = fmap.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    cnx = fmap.flatten(2).permute(0, 2, 1)
    cnx = torch.cat([cnx.mean(dim=1, keepdim=True), cnx], dim=1)
    stat = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    dino_x = (x * stat(CLIP_STD) + stat(CLIP_MEAN) - stat(IMAGENET_MEAN)) / stat(IMAGENET_STD)
    dino = self.dinov2(dino_x).last_hidden_state
    n = x.shape[0]
    if self.light:
      ens = self.visual_proj(torch.cat([cnx, dino], dim=-1))
      return torch.cat([self.start_img.expand(n, -1, -1), ens, self.end_img.expand(n, -1, -1)],
                       dim=1)
    clip = self.clip.post_layernorm(self.clip(x).last_hidden_state)
    queries = self.qformer(query_embeds=self.query_tokens.expand(n, -1, -1),
                           encoder_hidden_states=self.eva(x).last_hidden_state).last_hidden_state
    ens = self.visual_proj(torch.cat([clip, cnx, dino], dim=-1))
    return torch.cat([self.start_img.expand(n, -1, -1), self.qformer_proj(queries), ens,
                      self.end_img.expand(n, -1, -1)], dim=1)

  @torch.no_grad()
  def logits(self, pixels: dict, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab]: the reference's `output(h[:, image_words:])` for one image."""
    image = self.encode_views(pixels["vit"], pixels["convnext"]).reshape(1, -1, self.cfg.llm.dim)
    embed = self.llm.model.embed_tokens(torch.tensor([ids]))
    h = torch.cat([embed[:, :1], image, embed[:, 1:]], dim=1)
    return self.llm(inputs_embeds=h).logits[0, image.shape[1]:].numpy()

  def accessory_state(self) -> tuple[dict, dict]:
    """(LLM state in Meta names, every other key) without the `llma.` prefix."""
    other = {}
    other.update({"openclip_convnext_xxl." + k.removeprefix("visual.trunk."): v for k, v in
                  timm_names(numpy_state(self.convnext), self.cfg.convnext.depths).items()})
    other.update({"dinov2_vitg14." + k: v for k, v in dinov2_hub_names(
        numpy_state(self.dinov2), self.cfg.dinov2.depth).items()})
    other.update(numpy_state(self.visual_proj, "visual_proj."))
    if not self.light:
      other.update({"clip." + k: v for k, v in open_clip_names(
          numpy_state(self.clip), self.cfg.clip.depth).items()})
      other.update(numpy_state(self.eva, "qformer.vision_model."))
      other.update(numpy_state(self.qformer, "qformer.qformer."))
      other["qformer.query_tokens"] = self.query_tokens.numpy()
      other.update(numpy_state(self.qformer_proj, "qformer_proj."))
    other["start_img"], other["end_img"] = self.start_img.numpy(), self.end_img.numpy()
    return llama_refs.meta_state_dict(self.llm), other


def write_accessory(model: TorchSphinx, path: Path, llama_type: str, tokenizer: Path,
                    n_shards: int = 2, dtype: torch.dtype = torch.float32) -> Path:
  """A LLaMA2-Accessory release: model-parallel shards of {"model": state dict} under `llma.`,
  in `dtype` (the releases are bf16), config.json (ModelArgs), meta.json, tokenizer.model."""
  path.mkdir(parents=True)
  llm_state, other = model.accessory_state()
  for i, shard in enumerate(llama_refs.split_for_model_parallel(llm_state, n_shards)):
    shard.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in other.items()})
    torch.save({"model": {"llma." + k: v.to(dtype) for k, v in shard.items()}},
               path / f"consolidated.{i:02d}-of-{n_shards:02d}.model.pth")
  c = model.cfg.llm
  (path / "config.json").write_text(json.dumps({
      "dim": c.dim, "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
      "vocab_size": c.vocab_size, "multiple_of": c.multiple_of, "ffn_dim_multiplier": None,
      "norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "max_batch_size": 32,
      "max_seq_len": c.max_seq_len, "rope_scaling": None,
      "load_pretrained_visual_encoder": False}))
  (path / "meta.json").write_text(json.dumps({"llama_type": llama_type}))
  (path / "tokenizer.model").write_bytes(tokenizer.read_bytes())
  return path
