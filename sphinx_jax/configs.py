"""Architecture configs: frozen dataclasses plus named presets.

Variants are configs, not copied files: every model size is a preset of one dataclass, and
`config.json` in a checkpoint directory is `dataclasses.asdict` of it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from sphinx_jax.util.errors import UserError

# What a scanned block keeps for the backward pass (models.layers.scanned); None: no remat.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ATTENTION_IMPLS = ("xla", "cudnn")  # the towers' jax.nn.dot_product_attention implementations
# The LLM's (models.attention): by segment ids, Pallas splash attention on TPU too.
LLM_ATTENTION_IMPLS = ATTENTION_IMPLS + ("splash",)
# The LLM's projections a LoRA adapter may sit on (models.llama): attention, then feed-forward.
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


class _Config:
  """replace / to_dict / from_dict shared by the configs (lists from JSON become tuples)."""

  def replace(self, **changes: Any):
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise UserError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

  attention_impls: ClassVar[tuple[str, ...]] = ATTENTION_IMPLS

  def _check_common(self):
    if self.remat_policy not in REMAT_POLICIES:
      raise UserError(f"remat_policy {self.remat_policy!r} is not one of "
                       f"{tuple(REMAT_POLICIES)}")
    if getattr(self, "attention", "xla") not in self.attention_impls:
      raise UserError(f"attention {self.attention!r} is not one of {self.attention_impls}")


@dataclasses.dataclass(frozen=True)
class LlamaConfig(_Config):
  """LLaMA-2 / TinyLlama decoder, with Meta's field names (`params.json`)."""

  attention_impls: ClassVar[tuple[str, ...]] = LLM_ATTENTION_IMPLS

  vocab_size: int = 32000
  dim: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads == n_heads)
  multiple_of: int = 256  # Meta's FFN rounding
  ffn_dim_multiplier: float | None = None
  ffn_dim: int | None = None  # explicit FFN width (HF `intermediate_size`); None: Meta's rule
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: float = 1.0  # linear position scaling: positions are divided by this
  max_seq_len: int = 4096
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype; logits are always returned in float32
  remat_policy: str = "none"  # one of REMAT_POLICIES
  attention: str = "xla"  # one of LLM_ATTENTION_IMPLS (models.attention)
  # LoRA adapters of this rank on `lora_targets` (0: none), scaled by lora_alpha / lora_rank.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = LORA_TARGETS

  def __post_init__(self):
    unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
    if unknown or self.lora_rank < 0:
      raise UserError(f"LoRA: rank {self.lora_rank} (>= 0), targets {unknown} not among "
                       f"{LORA_TARGETS}")
    if self.dim % self.n_heads:
      raise UserError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
    if self.n_heads % self.kv_heads:
      raise UserError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
    self._check_common()

  @property
  def kv_heads(self) -> int:
    return self.n_kv_heads or self.n_heads

  @property
  def head_dim(self) -> int:
    return self.dim // self.n_heads

  @property
  def hidden_dim(self) -> int:
    """FFN width: explicit, or Meta's rule (2/3 of 4*dim, times the multiplier, rounded up)."""
    if self.ffn_dim is not None:
      return self.ffn_dim
    hidden = int(2 * 4 * self.dim / 3)
    if self.ffn_dim_multiplier is not None:
      hidden = int(self.ffn_dim_multiplier * hidden)
    return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


LLM_PRESETS: dict[str, LlamaConfig] = {
    "llama2_7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32),
    "llama2_13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40),
    "llama2_70b": LlamaConfig(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3, multiple_of=4096),
    "tinyllama_1b": LlamaConfig(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, max_seq_len=2048),
    # Laptop-sized model for the embedded default and tests.
    "tiny": LlamaConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32,
                        max_seq_len=512),
    # The embedded default's LLM (configs/default.py): small enough to train in minutes on a CPU.
    "mini": LlamaConfig(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=2,
                        multiple_of=32, max_seq_len=512),
}


def llm_preset(name: str, **overrides: Any) -> LlamaConfig:
  if name not in LLM_PRESETS:
    raise KeyError(f"unknown LLM preset {name!r}; known: {sorted(LLM_PRESETS)}")
  return LLM_PRESETS[name].replace(**overrides)


# =============================================================================================
# Vision towers: SPHINX's frozen encoders (reference/sphinx_accessory.md §1.1). One dataclass per
# network family; the released towers are presets.

VIT_ACTS = ("gelu", "quick_gelu", "swiglu")


def _check_vit_shape(cfg) -> None:
  """A ViT's shape (CLIP / DINOv2 / EVA and SAM's encoder): heads split the width, patches
  tile the image."""
  if cfg.width % cfg.n_heads:
    raise UserError(f"width {cfg.width} is not a multiple of n_heads {cfg.n_heads}")
  if cfg.image_size % cfg.patch_size:
    raise UserError(f"image_size {cfg.image_size} is not a multiple of patch {cfg.patch_size}")


@dataclasses.dataclass(frozen=True)
class ViTConfig(_Config):
  """One pre-norm ViT for CLIP ViT-L/14, DINOv2 and BLIP-2's EVA ViT-g; variants are fields.

  The output is the final LayerNorm over all tokens [cls, patches]: CLIP's ln_post (no `proj`),
  DINOv2's norm, BLIP-2's post_layernorm. Position embeddings are stored for the grid of
  `image_size` (DINOv2's 37x37 are resized to it once, at conversion).
  """

  image_size: int = 224
  patch_size: int = 14
  width: int = 1024
  depth: int = 24
  n_heads: int = 16
  mlp_dim: int = 4096  # FFN hidden width; for swiglu, that of each of the gate and up projections
  act: str = "gelu"  # one of VIT_ACTS
  norm_eps: float = 1e-5
  patch_bias: bool = False  # CLIP's conv1 has no bias; DINOv2's and EVA's patch convs have one
  pre_norm: bool = True  # CLIP's ln_pre before the blocks
  layerscale: bool = False  # DINOv2: learned per-channel scales on both residual branches
  in_channels: int = 3
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  attention: str = "xla"

  def __post_init__(self):
    _check_vit_shape(self)
    if self.act not in VIT_ACTS:
      raise UserError(f"act {self.act!r} is not one of {VIT_ACTS}")
    self._check_common()

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def n_tokens(self) -> int:
    return self.grid * self.grid + 1

  @property
  def head_dim(self) -> int:
    return self.width // self.n_heads


@dataclasses.dataclass(frozen=True)
class ConvNextConfig(_Config):
  """ConvNeXt (timm / HF names); the output is the last stage's map after the head norm, NHWC."""

  depths: tuple[int, ...] = (3, 4, 30, 3)
  dims: tuple[int, ...] = (384, 768, 1536, 3072)
  patch_size: int = 4  # stem: patch_size x patch_size conv, stride patch_size
  kernel_size: int = 7  # depthwise conv
  mlp_ratio: int = 4
  norm_eps: float = 1e-5  # stem, downsample and block norms (timm: norm_eps; HF: 1e-6 fixed)
  head_norm_eps: float = 1e-5  # timm head.norm: norm_eps; HF ConvNextModel.layernorm: config eps
  layerscale: bool = True
  in_channels: int = 3
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"

  def __post_init__(self):
    if len(self.depths) != len(self.dims) or not self.depths:
      raise UserError(f"depths {self.depths} and dims {self.dims} must be non-empty, same length")
    self._check_common()

  @property
  def stride(self) -> int:
    """Input pixels per output cell."""
    return self.patch_size * 2 ** (len(self.dims) - 1)


@dataclasses.dataclass(frozen=True)
class QFormerConfig(_Config):
  """BLIP-2 Q-Former (query path only): learned queries, BERT-style post-norm layers,
  cross-attention to the image features in layers 0, f, 2f, ... (f = cross_attention_frequency)."""

  width: int = 768
  depth: int = 12
  n_heads: int = 12
  mlp_dim: int = 3072
  n_queries: int = 32
  encoder_width: int = 1408  # width of the image features attended to
  cross_attention_frequency: int = 2
  norm_eps: float = 1e-12
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  attention: str = "xla"

  def __post_init__(self):
    if self.width % self.n_heads:
      raise UserError(f"width {self.width} is not a multiple of n_heads {self.n_heads}")
    if self.cross_attention_frequency < 1 or self.depth % self.cross_attention_frequency:
      raise UserError(f"depth {self.depth} is not a multiple of cross_attention_frequency "
                       f"{self.cross_attention_frequency}")
    self._check_common()

  @property
  def head_dim(self) -> int:
    return self.width // self.n_heads


@dataclasses.dataclass(frozen=True)
class Blip2Config(_Config):
  """BLIP-2 image features as SPHINX takes them: EVA ViT-g, then the Q-Former's 32 queries."""

  vision: ViTConfig = ViTConfig()
  qformer: QFormerConfig = QFormerConfig()

  def __post_init__(self):
    if self.vision.width != self.qformer.encoder_width:
      raise UserError(f"vision width {self.vision.width} != qformer encoder_width "
                       f"{self.qformer.encoder_width}")

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Blip2Config":
    unknown = sorted(set(d) - {"vision", "qformer"})
    if unknown:
      raise UserError(f"unknown Blip2Config fields: {unknown}")
    return cls(ViTConfig.from_dict(d["vision"]), QFormerConfig.from_dict(d["qformer"]))


_EVA_VIT_G = ViTConfig(width=1408, depth=39, n_heads=16, mlp_dim=6144, norm_eps=1e-6,
                       patch_bias=True, pre_norm=False)
_QFORMER = QFormerConfig()

VISION_PRESETS: dict[str, Any] = {
    # open_clip ViT-L-14 built with pretrained=None, as SPHINX does: nn.GELU, not QuickGELU.
    "clip_vit_l14": ViTConfig(),
    "convnext_xxlarge": ConvNextConfig(),
    # dinov2_vitg14: SwiGLU hidden 4096 = (int(4 * 1536 * 2 / 3) + 7) // 8 * 8.
    "dinov2_vitg14": ViTConfig(width=1536, depth=40, n_heads=24, mlp_dim=4096, act="swiglu",
                               norm_eps=1e-6, patch_bias=True, pre_norm=False, layerscale=True),
    "eva_vit_g": _EVA_VIT_G,
    "qformer": _QFORMER,
    "blip2": Blip2Config(vision=_EVA_VIT_G, qformer=_QFORMER),
}


def vision_preset(name: str, **overrides: Any):
  if name not in VISION_PRESETS:
    raise KeyError(f"unknown vision preset {name!r}; known: {sorted(VISION_PRESETS)}")
  return VISION_PRESETS[name].replace(**overrides)


@dataclasses.dataclass(frozen=True)
class SamConfig(_Config):
  """Segment Anything: a ViT image encoder (windowed blocks, a global block every
  `len(blocks) / len(global_blocks)`, decomposed relative positions, a conv neck to `channels`),
  the prompt encoder and the two-way mask decoder, both `channels` wide."""

  image_size: int = 1024
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  n_heads: int = 12
  mlp_dim: int = 3072
  window_size: int = 14
  global_blocks: tuple[int, ...] = (2, 5, 8, 11)  # the rest attend within windows
  norm_eps: float = 1e-6
  channels: int = 256  # the neck's output: image embedding, prompt and decoder width
  decoder_depth: int = 2
  decoder_heads: int = 8
  decoder_mlp_dim: int = 2048
  attention_downsample: int = 2  # token<->image attention runs at channels / this
  n_multimask: int = 3
  iou_head_width: int = 256  # the IoU head: 3 layers, as in every SAM (so are the hypernetworks)
  # The two-way blocks' LayerNorms: torch's default 1e-5 in segment_anything; HF's SamModel
  # builds them with the decoder config's layer_norm_eps (1e-6 in its checkpoints).
  decoder_norm_eps: float = 1e-5
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  attention: str = "xla"

  def __post_init__(self):
    sizes = ("image_size", "patch_size", "width", "depth", "n_heads", "mlp_dim", "window_size",
             "channels", "decoder_depth", "decoder_heads", "decoder_mlp_dim",
             "attention_downsample", "n_multimask", "iou_head_width")
    for name in sizes:
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise UserError(f"{name} {getattr(self, name)!r}: must be a positive integer")
    _check_vit_shape(self)
    if (self.channels // self.attention_downsample) % self.decoder_heads:
      raise UserError(f"channels {self.channels} / {self.attention_downsample} is not a multiple "
                       f"of decoder_heads {self.decoder_heads}")
    n = len(self.global_blocks)
    if not n or self.depth % n or self.global_blocks != tuple(
        range(self.depth // n - 1, self.depth, self.depth // n)):
      raise UserError(f"global_blocks {self.global_blocks}: expected every k-th of {self.depth} "
                       "blocks to be global (k-1, 2k-1, ..., depth-1), as in every SAM")
    self._check_common()

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def head_dim(self) -> int:
    return self.width // self.n_heads

  @property
  def period(self) -> int:
    """Blocks per windowed run plus its global block."""
    return self.depth // len(self.global_blocks)

  @property
  def act(self) -> str:
    """The encoder MLP's activation (vit.Mlp reads it): exact GELU in every SAM."""
    return "gelu"


# segment_anything's build_sam_vit_{b,l,h}.
SAM_PRESETS = {
    "sam_vit_b": SamConfig(),
    "sam_vit_l": SamConfig(width=1024, depth=24, n_heads=16, mlp_dim=4096,
                           global_blocks=(5, 11, 17, 23)),
    "sam_vit_h": SamConfig(width=1280, depth=32, n_heads=16, mlp_dim=5120,
                           global_blocks=(7, 15, 23, 31)),
}


def sam_preset(name: str, **overrides: Any) -> SamConfig:
  if name not in SAM_PRESETS:
    raise KeyError(f"unknown SAM preset {name!r}; known: {sorted(SAM_PRESETS)}")
  return SAM_PRESETS[name].replace(**overrides)


@dataclasses.dataclass(frozen=True)
class TextConfig(_Config):
  """The small text encoder of the towers' own pre-training (train/towers.py, the embedded
  default's stage 0): a bidirectional pre-norm transformer over token ids, mean-pooled."""

  vocab_size: int = 512
  max_len: int = 96
  width: int = 128
  depth: int = 2
  n_heads: int = 2
  mlp_dim: int = 256
  act: str = "gelu"
  norm_eps: float = 1e-5
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"
  attention: str = "xla"

  def __post_init__(self):
    if self.width % self.n_heads:
      raise UserError(f"width {self.width} is not a multiple of n_heads {self.n_heads}")
    self._check_common()

  @property
  def head_dim(self) -> int:
    return self.width // self.n_heads


# =============================================================================================
# SPHINX: one model, every released variant is a config (reference/sphinx_accessory.md §0).

_MOE_TYPES = ("mixtral_sparse_ens", "mixtral_sparse_ens5")


@dataclasses.dataclass(frozen=True)
class SphinxConfig(_Config):
  """The MLLM: LLM + towers + how an image becomes views.

  Per view the LLM sees [start, Q-Former queries (if blip2), 257 ensemble tokens, end]. Images
  are cut into `n_views` views by the data pipeline's `view_plan` (data.image.VIEW_PLANS); the
  ViTs see `dinov2.image_size` pixels, the ConvNeXt `convnext_size` (its map is repeated up to
  the ViT patch grid). How many images a row holds is the data's choice (DataConfig.max_images),
  not the model's.
  """

  llm: LlamaConfig
  convnext: ConvNextConfig
  dinov2: ViTConfig
  clip: ViTConfig | None = None  # None in the light (Tiny) variants
  blip2: Blip2Config | None = None  # None in the light (Tiny) variants
  view_plan: str = "sphinx"
  n_views: int = 1
  convnext_size: int = 256

  def __post_init__(self):
    if self.clip is not None and self.clip.n_tokens != self.dinov2.n_tokens:
      raise UserError(f"CLIP gives {self.clip.n_tokens} tokens, DINOv2 {self.dinov2.n_tokens}")
    if self.blip2 is not None and self.blip2.vision.image_size != self.dinov2.image_size:
      raise UserError("BLIP-2 and DINOv2 must see views of the same size")

  @property
  def tokens_per_view(self) -> int:
    queries = self.blip2.qformer.n_queries if self.blip2 is not None else 0
    return 1 + queries + self.dinov2.n_tokens + 1

  @property
  def image_tokens(self) -> int:
    """LLM positions one image takes (the reference's `image_words`)."""
    return self.n_views * self.tokens_per_view

  @property
  def view_sizes(self) -> dict[str, int]:
    return {"vit": self.dinov2.image_size, "convnext": self.convnext_size}

  def with_tower_dtypes(self, param_dtype: str, dtype: str) -> "SphinxConfig":
    """Every vision tower (CLIP, ConvNeXt, DINOv2, BLIP-2's ViT and Q-Former) stored in
    `param_dtype` and computed in `dtype`; the LLM and the mixer keep the LLM's dtypes."""
    def cast(tower):
      return None if tower is None else tower.replace(param_dtype=param_dtype, dtype=dtype)
    blip2 = None if self.blip2 is None else self.blip2.replace(
        vision=cast(self.blip2.vision), qformer=cast(self.blip2.qformer))
    return self.replace(clip=cast(self.clip), convnext=cast(self.convnext),
                        dinov2=cast(self.dinov2), blip2=blip2)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "SphinxConfig":
    parsers = {"llm": LlamaConfig.from_dict, "convnext": ConvNextConfig.from_dict,
               "dinov2": ViTConfig.from_dict, "clip": ViTConfig.from_dict,
               "blip2": Blip2Config.from_dict}
    d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise UserError(f"unknown SphinxConfig fields: {unknown}")
    return cls(**{k: parsers[k](v) if k in parsers and v is not None else v
                  for k, v in d.items()})


# Fields config.json files written by earlier versions hold and the model no longer has: read
# and ignored, so converted checkpoints keep loading.
RETIRED_FIELDS = ("max_images",)


def _sphinx(llm: str, plan: str, n_views: int, light: bool = False) -> SphinxConfig:
  towers = dict(convnext=VISION_PRESETS["convnext_xxlarge"],
                dinov2=VISION_PRESETS["dinov2_vitg14"])
  if not light:
    towers.update(clip=VISION_PRESETS["clip_vit_l14"], blip2=VISION_PRESETS["blip2"])
  return SphinxConfig(llm=LLM_PRESETS[llm], view_plan=plan, n_views=n_views,
                      convnext_size=512 if light else 256, **towers)


def _tiny(plan: str, n_views: int, llm: str = "tiny", view: int = 28, patch: int = 7,
          convnext_size: int = 16,
          convnext: ConvNextConfig = ConvNextConfig(depths=(1, 1), dims=(16, 32)),
          light: bool = False) -> SphinxConfig:
  """Laptop-sized SPHINX with every tower (tests; `mini`: the embedded default): a 4x4 patch
  grid, the ConvNeXt map repeated up to it, 4 Q-Former queries; widths of 64 per head, as
  conversion infers. `light`: no CLIP and no Q-Former, as the Tiny releases."""
  vit = ViTConfig(image_size=view, patch_size=patch, width=128, depth=2, n_heads=2, mlp_dim=128)
  eva = vit.replace(norm_eps=1e-6, patch_bias=True, pre_norm=False)
  blip2 = Blip2Config(eva, QFormerConfig(width=128, depth=2, n_heads=2, mlp_dim=128,
                                         n_queries=4, encoder_width=128))
  return SphinxConfig(
      llm=LLM_PRESETS[llm], clip=None if light else vit,
      convnext=convnext,
      dinov2=vit.replace(act="swiglu", norm_eps=1e-6, patch_bias=True, pre_norm=False,
                         layerscale=True),
      blip2=None if light else blip2,
      view_plan=plan, n_views=n_views, convnext_size=convnext_size)


SPHINX_PRESETS: dict[str, SphinxConfig] = {
    "sphinx": _sphinx("llama2_13b", "sphinx", 1),
    "sphinx_1k": _sphinx("llama2_13b", "sphinx_1k", 5),
    "sphinx_2k": _sphinx("llama2_13b", "sphinx_2k", 10),
    "sphinx_tiny": _sphinx("tinyllama_1b", "sphinx_tiny", 1, light=True),
    "sphinx_tiny_1k": _sphinx("tinyllama_1b", "sphinx_tiny_1k", 5, light=True),
    "tiny": _tiny("tiny", 1),
    "tiny_1k": _tiny("tiny_1k", 5),
    "tiny_2k": _tiny("tiny_2k", 10),
    "tiny_light": _tiny("tiny_light", 1, convnext_size=32, light=True),
    "tiny_light_1k": _tiny("tiny_light_1k", 5, convnext_size=32, light=True),
    # The embedded default: the synthetic world's 100-px squares as they are, in 20-px patches
    # (a 5x5 grid: one patch per cell of the world), the ConvNeXt on the same pixels with a
    # 20-px stride (docs/architecture.md).
    "mini": _tiny("mini", 1, llm="mini", view=100, patch=20, convnext_size=100,
                  convnext=ConvNextConfig(depths=(1, 1), dims=(48, 96), patch_size=10)),
}



def checkpoint_config(cfg: "SphinxConfig | LlamaConfig") -> dict[str, Any]:
  """A params checkpoint's config.json: {'model': 'sphinx', **SphinxConfig} or {'model':
  'llama', 'llm': LlamaConfig}."""
  if isinstance(cfg, LlamaConfig):
    return {"model": "llama", "llm": cfg.to_dict()}
  return {"model": "sphinx", **cfg.to_dict()}


# config.json keys beside the architecture: the kind of model, how its LLM is stored
# (checkpoints.params_io)
CHECKPOINT_KEYS = ("model", "quantization")


def from_checkpoint_config(d: dict[str, Any]) -> "SphinxConfig | LlamaConfig":
  """The inverse of `checkpoint_config`."""
  if d.get("model") == "llama":
    return LlamaConfig.from_dict(d["llm"])
  if d.get("model") == "sphinx":
    return SphinxConfig.from_dict({k: v for k, v in d.items() if k not in CHECKPOINT_KEYS})
  raise UserError(f"model {d.get('model')!r} is neither 'sphinx' nor 'llama'")


# LLaMA2-Accessory `llama_type` (meta.json) -> our preset.
ACCESSORY_TYPES = {"llama_ens": "sphinx", "llama_ens5": "sphinx_1k", "llama_ens10": "sphinx_2k",
                   "llama_ens_light": "sphinx_tiny", "llama_ens5_light": "sphinx_tiny_1k"}


def sphinx_preset(name: str, **overrides: Any) -> SphinxConfig:
  if name in _MOE_TYPES or name.startswith("sphinx_moe"):
    raise NotImplementedError(f"{name}: SPHINX-MoE (Mixtral) is not supported yet")
  if name not in SPHINX_PRESETS:
    raise KeyError(f"unknown SPHINX preset {name!r}; known: {sorted(SPHINX_PRESETS)}")
  return SPHINX_PRESETS[name].replace(**overrides)


# A training run's `model` names a SPHINX preset, or `llm:<LLM preset>` for the LLM alone (text
# only); the prefix keeps the names apart ('tiny' and 'mini' are presets of both).
TEXT_ONLY_PREFIX = "llm:"


def model_preset(name: str) -> "SphinxConfig | LlamaConfig":
  """`sphinx_preset(name)`, or the LLM preset of `llm:<name>` (a text-only model)."""
  if name.startswith(TEXT_ONLY_PREFIX):
    llm = name[len(TEXT_ONLY_PREFIX):]
    if llm not in LLM_PRESETS:
      raise UserError(f"unknown LLM preset {llm!r}; known: {sorted(LLM_PRESETS)}")
    return LLM_PRESETS[llm]
  try:
    return sphinx_preset(name)
  except KeyError as e:
    raise UserError(f"{e.args[0]}; or {TEXT_ONLY_PREFIX}<one of {sorted(LLM_PRESETS)}> for "
                    "the LLM alone") from None
