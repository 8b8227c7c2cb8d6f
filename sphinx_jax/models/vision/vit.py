"""One ViT for SPHINX's CLIP ViT-L/14, DINOv2 ViT-g/14 and BLIP-2's EVA ViT-g (configs.ViTConfig).

The variants differ only in config fields: QuickGELU / GELU / SwiGLU FFN, CLIP's ln_pre, DINOv2's
layerscale, a bias on the patch conv. All three end with a LayerNorm over every token, which is
the feature SPHINX takes (CLIP's ln_post without `proj`, DINOv2's norm, BLIP-2's
post_layernorm). Blocks are one `nn.scan` (stacked params under `layers`), so compile time does
not grow with depth. Its Attention and Block serve the Q-Former and the text encoder too.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import ViTConfig
from sphinx_jax.models.layers import dense, kernel_init, layer_norm, scanned, zeros_init
from sphinx_jax.util.errors import UserError

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # torch nn.GELU / HF "gelu"
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP
}


class PatchConv(nn.Module):
  """A conv whose stride equals its kernel (ViT patch embedding, ConvNeXt stem and downsampling),
  as a reshape and one einsum. NHWC in and out; rows/columns past the last full patch are
  dropped, as torch does. Kernel [p, p, C_in, C_out] (torch's [C_out, C_in, p, p] transposed)."""

  features: int
  patch: int
  use_bias: bool
  dtype: str
  param_dtype: str

  @nn.compact
  def __call__(self, x):
    p = self.patch
    b, h, w, c = x.shape
    axes = ("conv_spatial", "conv_spatial_w", "conv_in", "embed")
    kernel = self.param("kernel", kernel_init(axes), (p, p, c, self.features), self.param_dtype)
    x = x[:, :h // p * p, :w // p * p].astype(self.dtype)
    x = x.reshape(b, h // p, p, w // p, p, c)
    y = jnp.einsum("bhpwqc,pqcd->bhwd", x, kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", zeros_init(("embed",)), (self.features,),
                         self.param_dtype).astype(self.dtype)
    return y


class Attention(nn.Module):
  """Multi-head attention with biased q/k/v/out projections. Keys and values come from
  `context` (cross-attention, any width) or from `x`. `cfg` needs width, n_heads, head_dim,
  dtype, param_dtype and attention."""

  cfg: ViTConfig

  def _param(self, name, shape, axes, init=kernel_init):
    return self.param(name, init(axes), shape, self.cfg.param_dtype).astype(self.cfg.dtype)

  def _project(self, name, x):
    cfg = self.cfg
    w = self._param("w" + name, (x.shape[-1], cfg.n_heads, cfg.head_dim),
                    ("embed", "heads", "head_dim"))
    b = self._param("b" + name, (cfg.n_heads, cfg.head_dim), ("heads", "head_dim"), zeros_init)
    return jnp.einsum("btd,dhk->bthk", x, w) + b

  @nn.compact
  def __call__(self, x, context=None, mask=None):
    """`mask`: optional bool [B, 1 or heads, T, S], which keys each query may see."""
    cfg = self.cfg
    x = x.astype(cfg.dtype)
    context = x if context is None else context.astype(cfg.dtype)
    q = nn.with_logical_constraint(self._project("q", x), ("batch", "length", "act_heads", None))
    k = nn.with_logical_constraint(self._project("k", context),
                                   ("batch", "length", "act_heads", None))
    v = nn.with_logical_constraint(self._project("v", context),
                                   ("batch", "length", "act_heads", None))
    out = jax.nn.dot_product_attention(
        q, k, v, mask=mask, implementation=None if cfg.attention == "xla" else cfg.attention)
    wo = self._param("wo", (cfg.n_heads, cfg.head_dim, cfg.width), ("heads", "head_dim", "embed"))
    return jnp.einsum("bthk,hkd->btd", out, wo) + self._param("bo", (cfg.width,), ("embed",),
                                                              zeros_init)


class Mlp(nn.Module):
  """Two-layer FFN (fc1, act, fc2) or DINOv2's SwiGLU (w2(silu(w1 x) * w3 x)), all biased."""

  cfg: ViTConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    if cfg.act == "swiglu":
      gate = dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "w1")(x)
      hidden = nn.silu(gate) * dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "w3")(x)
      out_name = "w2"
    else:
      hidden = ACTIVATIONS[cfg.act](dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "fc1")(x))
      out_name = "fc2"
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "act_mlp"))
    return dense(cfg, cfg.width, ("mlp", "embed"), out_name)(hidden)


class Block(nn.Module):
  """Pre-norm block: x + ls_1 * attn(ln_1(x)), then x + ls_2 * mlp(ln_2(x)) (ls: DINOv2 only).
  Also the text encoder's block (models/text_encoder.py), with a key mask."""

  cfg: ViTConfig

  def _scale(self, name, y):
    if not getattr(self.cfg, "layerscale", False):
      return y
    gamma = self.param(name, nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (self.cfg.width,), self.cfg.param_dtype)
    return y * gamma.astype(self.cfg.dtype)

  @nn.compact
  def __call__(self, x, mask=None):
    cfg = self.cfg
    x = x + self._scale("ls_1", Attention(cfg, name="attn")(
        layer_norm(cfg, cfg.norm_eps, "ln_1")(x), mask=mask))
    x = x + self._scale("ls_2", Mlp(cfg, name="mlp")(layer_norm(cfg, cfg.norm_eps, "ln_2")(x)))
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed")), None


class ViT(nn.Module):
  """pixels [B, image_size, image_size, C] (NHWC, normalised) -> features [B, 1 + grid^2, width].

  Params: patch_embed, cls_token, pos_embed, ln_pre (if pre_norm), layers (stacked), ln_post.
  """

  cfg: ViTConfig

  @nn.compact
  def __call__(self, pixels):
    cfg = self.cfg
    if pixels.shape[1:3] != (cfg.image_size, cfg.image_size):
      raise UserError(f"ViT expects {cfg.image_size}x{cfg.image_size} images, got "
                       f"{pixels.shape[1]}x{pixels.shape[2]}")
    x = PatchConv(cfg.width, cfg.patch_size, cfg.patch_bias, cfg.dtype, cfg.param_dtype,
                  name="patch_embed")(pixels)
    x = x.reshape(x.shape[0], -1, cfg.width)
    cls = self.param("cls_token", kernel_init(("embed",)), (cfg.width,), cfg.param_dtype)
    pos = self.param("pos_embed", kernel_init(("positions", "embed")),
                     (cfg.n_tokens, cfg.width), cfg.param_dtype)
    cls = jnp.broadcast_to(cls.astype(cfg.dtype), (x.shape[0], 1, cfg.width))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(cfg.dtype)
    if cfg.pre_norm:
      x = layer_norm(cfg, cfg.norm_eps, "ln_pre")(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    x, _ = scanned(Block, cfg, cfg.depth)(cfg, name="layers")(x)
    return layer_norm(cfg, cfg.norm_eps, "ln_post")(x)
