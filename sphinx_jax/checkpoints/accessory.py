"""LLaMA2-Accessory SPHINX checkpoints -> params checkpoint (reference/sphinx_accessory.md §2).

A release is `consolidated.NN-of-MM.model.pth` shards ({"model": state dict}, keys under
`llma.`), `config.json` (the LLM's ModelArgs), `meta.json` ({"llama_type": ...}) and
`tokenizer.model`. LLM weights are merged along fairscale's model-parallel dims; everything else
(towers, projections, start/end vectors) is replicated and read from shard 0, with a warning
when another shard's replica differs. Tower sizes are inferred from shapes.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from sphinx_jax.checkpoints import source_files
from sphinx_jax.checkpoints.llama import find_tokenizer, llm_parts, meta_split_dim
from sphinx_jax.checkpoints.torch_io import (ConversionError, ShardedStateDict, read_json,
                                             shard_files)
from sphinx_jax.checkpoints.vision_convnext import timm_convnext
from sphinx_jax.checkpoints.vision_qformer import hf_blip2
from sphinx_jax.checkpoints.vision_vit import dinov2_hub_vit, open_clip_vit
from sphinx_jax.configs import (ACCESSORY_TYPES, LlamaConfig, SphinxConfig, checkpoint_config,
                                sphinx_preset)
from sphinx_jax.data.image import VIEW_PLANS

log = logging.getLogger(__name__)

PREFIX = "llma."
# Keys of a release that no converter reads (the towers' own ignore lists, in release names):
# CLIP's text-side leftovers (only `clip.transformer` was set to None) and its unused `proj`,
# RoPE tables some versions saved, DINOv2's mask token, a classifier head, the Q-Former's text
# path (older transformers saved it) and the Blip2Model parts SPHINX sets to None.
_IGNORED = (r"clip\.(?!visual\.).*", r"clip\.visual\.proj", r"rope\.freqs", r"freqs_cis",
            r"dinov2_vitg14\.mask_token", r"openclip_convnext_xxl\.head\.fc\..*",
            r"qformer\.qformer\.encoder\.layer\.\d+\.(intermediate|output)\..*",
            r"qformer\.(language_projection|language_model)\..*")
_MIXER = (r"(visual_proj|qformer_proj)\.[01]\.(weight|bias)", r"start_img", r"end_img")
_TOWER_PREFIXES = ("clip.visual.", "openclip_convnext_xxl.", "dinov2_vitg14.", "qformer.")
_LLM = (r"tok_embeddings\.weight", r"norm\.weight", r"output\.weight", r"layers\.\d+\..*")
# What only the full variants read: CLIP, the Q-Former and its projection (the light ones have
# neither, llama_ens_light.py).
_FULL_ONLY = ("clip.visual.", "qformer.", "qformer_proj.")
_ALWAYS = ("openclip_convnext_xxl.", "dinov2_vitg14.", "visual_proj.")


def llama_type_of(meta_json: Path) -> str:
  """meta.json's llama_type, if it is a SPHINX variant we convert."""
  llama_type = read_json(meta_json).get("llama_type")
  if not isinstance(llama_type, str):
    raise ConversionError(f"{meta_json}: no llama_type string (found {llama_type!r})")
  if llama_type.startswith("mixtral"):
    raise ConversionError(f"{meta_json}: llama_type {llama_type!r} (SPHINX-MoE) is not supported "
                          "yet")
  if llama_type not in ACCESSORY_TYPES:
    raise ConversionError(f"{meta_json}: llama_type {llama_type!r} is not a SPHINX variant we "
                          f"know ({sorted(ACCESSORY_TYPES)})")
  return llama_type


def llm_config(config_json: Path, vocab_size: int, dtype: str) -> LlamaConfig:
  args = read_json(config_json)
  defaults = LlamaConfig(dim=5120, n_layers=40, n_heads=40)  # ModelArgs' defaults: 13B
  fields = {k: args[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of",
                                 "ffn_dim_multiplier", "norm_eps", "rope_theta", "max_seq_len")
            if args.get(k) is not None}
  if args.get("rope_scaling"):
    fields["rope_scaling"] = float(args["rope_scaling"])
  return defaults.replace(vocab_size=vocab_size, param_dtype=dtype, dtype=dtype, **fields)


def _check_keys(keys: list[str], src: Path) -> None:
  known = _LLM + _MIXER + _IGNORED
  for key in keys:
    name = key.removeprefix(PREFIX)
    if not key.startswith(PREFIX):
      raise ConversionError(f"{src}: key {key!r} lacks the {PREFIX!r} prefix")
    if not (name.startswith(_TOWER_PREFIXES) or any(re.fullmatch(p, name) for p in known)):
      raise ConversionError(f"{src}: unmapped key {key!r}")


def _check_towers(keys: list[str], src: Path, llama_type: str, full: bool) -> None:
  """Before reading a tensor: the variant's towers are all there and no other tower is (a
  meta.json naming a light variant on full weights would otherwise drop CLIP and the Q-Former
  silently)."""
  names = [k.removeprefix(PREFIX) for k in keys]
  expected = _ALWAYS + (_FULL_ONLY if full else ())
  absent = [p for p in expected if not any(n.startswith(p) for n in names)]
  if absent:
    raise ConversionError(f"{src}: the weights lack {len(absent)} part(s) that llama_type "
                          f"{llama_type!r} (meta.json) reads: no key under "
                          f"{_few([PREFIX + p for p in absent])}")
  _refuse_unused([k for k, n in zip(keys, names) if n.startswith(_FULL_ONLY)
                  and not n.startswith(expected)], src, llama_type)


def _check_all_read(keys: list[str], read: set[str], src: Path, llama_type: str) -> None:
  """After converting: every key was read by a converter or is known to be unused."""
  _refuse_unused([k for k in keys if k not in read and
                  not any(re.fullmatch(p, k.removeprefix(PREFIX)) for p in _IGNORED)],
                 src, llama_type)


def _refuse_unused(unused: list[str], src: Path, llama_type: str) -> None:
  if unused:
    raise ConversionError(f"{src}: {len(unused)} key(s) that llama_type {llama_type!r} "
                          f"(meta.json) does not read: {_few(unused)}; is it the right variant?")


def _few(names: list[str], n: int = 3) -> str:
  """The first `n` names and how many more: one readable line however many there are."""
  shown = ", ".join(repr(x) for x in names[:n])
  return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _mixer_parts(get, cfg: SphinxConfig, dtype) -> Iterator[dict]:
  def t(key, shape=None):
    array = get(PREFIX + key, shape)
    return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))

  d = cfg.llm.dim
  mixer = {"start_img": t("start_img", (1, 1, d)).reshape(d),
           "end_img": t("end_img", (1, 1, d)).reshape(d)}
  for name in ("visual_proj",) + (("qformer_proj",) if cfg.blip2 is not None else ()):
    weight = t(f"{name}.0.weight")
    if weight.shape[0] != d:
      raise ConversionError(f"{PREFIX}{name}.0.weight has shape {weight.shape}; LLM dim is {d}")
    mixer[name] = {"linear": {"kernel": weight.T.copy(), "bias": t(f"{name}.0.bias", (d,))},
                   "norm": {"scale": t(f"{name}.1.weight", (d,)), "bias": t(f"{name}.1.bias", (d,))}}
  yield {"mixer": mixer}


def convert_accessory(src: Path, dst: Path, dtype: str | None = None,
                      tokenizer: Path | None = None, view_plan: str | None = None,
                      quantize: str | None = None) -> Path:
  """SPHINX release directory -> params checkpoint. `view_plan` overrides the variant's (e.g.
  for small test models whose towers see other sizes). The weights must be exactly what the
  variant in meta.json reads; every key is checked before the output appears."""
  llama_type = llama_type_of(src / "meta.json")
  preset = sphinx_preset(ACCESSORY_TYPES[llama_type])
  files = shard_files(src, r"consolidated\.(\d+)-of-\d+\.model\.pth")
  if not files:
    raise ConversionError(f"{src}: no consolidated.NN-of-MM.model.pth files")
  total = int(re.search(r"-of-(\d+)", files[0].name).group(1))
  if len(files) != total:
    raise ConversionError(f"{src}: found {len(files)} of {total} model-parallel shards")
  state = ShardedStateDict(files, meta_split_dim, unwrap="model",
                           config_source=str(src / "config.json"), check_replicas=True)
  keys = state.keys()
  _check_keys(keys, src)
  _check_towers(keys, src, llama_type, full=preset.clip is not None)
  read: set[str] = set()

  def get(key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    read.add(key)
    return state.get(key, shape)

  (vocab_size, _), src_dtype = state.shard0_info(PREFIX + "tok_embeddings.weight")
  dtype = dtype or src_dtype
  plan_name = view_plan or preset.view_plan
  plan = VIEW_PLANS[plan_name]
  llm = llm_config(src / "config.json", vocab_size, dtype)
  dinov2, dinov2_parts = dinov2_hub_vit(keys, get, PREFIX + "dinov2_vitg14.",
                                        grid=plan.vit.side // _patch(state), dtype=dtype)
  convnext, convnext_parts = timm_convnext(keys, get, PREFIX + "openclip_convnext_xxl.",
                                           dtype=dtype)
  towers = [dinov2_parts, convnext_parts]
  clip = blip2 = None
  if preset.clip is not None:
    clip, clip_parts = open_clip_vit(keys, get, PREFIX + "clip.visual.", act="gelu",
                                     dtype=dtype)
    blip2, blip2_parts = hf_blip2(keys, get, PREFIX + "qformer.", dtype=dtype)
    towers += [clip_parts, blip2_parts]
  cfg = SphinxConfig(llm=llm, convnext=convnext, dinov2=dinov2, clip=clip, blip2=blip2,
                     view_plan=plan_name, n_views=plan.num_views,
                     convnext_size=plan.convnext.input_side)

  def parts():
    yield from _mixer_parts(get, cfg, dtype)
    yield from llm_parts(get, llm, prefix=PREFIX, dtype=dtype)
    for tower in towers:
      yield from tower
    _check_all_read(keys, read, src, llama_type)  # inside the writer: no output on failure

  return source_files.write(dst, parts(), checkpoint_config(cfg),
                            tokenizer or find_tokenizer(src), "accessory", src,
                            [*files, src / "config.json", src / "meta.json"], quantize)


def _patch(state: ShardedStateDict) -> int:
  """DINOv2's patch size, from its patch conv."""
  shape, _ = state.shard0_info(PREFIX + "dinov2_vitg14.patch_embed.proj.weight")
  return shape[-1]
