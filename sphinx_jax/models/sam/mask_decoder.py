"""SAM's mask decoder: a two-way transformer between prompt tokens and the image embedding,
then upscaling x4 and one hypernetwork MLP per mask token, and the IoU head.

Batched over prompts: the image embedding [B, h, w, C] is shared by the P prompt sets of its
image ([B, P, N, C]): many boxes of one image are one call, the embedding computed once.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from sphinx_jax.configs import SamConfig
from sphinx_jax.models.layers import dense, kernel_init, layer_norm, zeros_init

_GELU = lambda x: jax.nn.gelu(x, approximate=False)


class Attention(nn.Module):
  """Attention with separate query / key / value inputs, projected to `channels / downsample`."""

  cfg: SamConfig
  downsample: int

  @nn.compact
  def __call__(self, q, k, v):
    cfg = self.cfg
    inner, heads = cfg.channels // self.downsample, cfg.decoder_heads

    def project(name, x):
      y = dense(cfg, inner, ("embed", "mlp"), name)(x)
      return y.reshape(*y.shape[:-1], heads, inner // heads)

    out = jax.nn.dot_product_attention(project("q", q), project("k", k), project("v", v))
    out = out.reshape(*out.shape[:-2], inner)
    return dense(cfg, cfg.channels, ("mlp", "embed"), "out")(out)


class TwoWayBlock(nn.Module):
  """Tokens: self-attention, cross-attention to the image, MLP; then the image attends to the
  tokens. Positions are added to queries and keys, never to values; the first block's
  self-attention takes the bare tokens (they are the positions then)."""

  cfg: SamConfig
  first: bool

  @nn.compact
  def __call__(self, tokens, image, token_pos, image_pos):
    cfg = self.cfg
    norm = lambda name: layer_norm(cfg, cfg.decoder_norm_eps, name)
    if self.first:
      tokens = Attention(cfg, 1, name="self_attn")(tokens, tokens, tokens)
    else:
      q = tokens + token_pos
      tokens = tokens + Attention(cfg, 1, name="self_attn")(q, q, tokens)
    tokens = norm("norm1")(tokens)
    tokens = tokens + Attention(cfg, cfg.attention_downsample, name="token_to_image")(
        tokens + token_pos, image + image_pos, image)
    tokens = norm("norm2")(tokens)
    hidden = nn.relu(dense(cfg, cfg.decoder_mlp_dim, ("embed", "mlp"), "fc1")(tokens))
    tokens = norm("norm3")(tokens + dense(cfg, cfg.channels, ("mlp", "embed"), "fc2")(hidden))
    image = image + Attention(cfg, cfg.attention_downsample, name="image_to_token")(
        image + image_pos, tokens + token_pos, tokens)
    return tokens, norm("norm4")(image)


class Mlps(nn.Module):
  """`n` independent ReLU MLPs (one layer per width), stacked, one per token of [..., n, C]."""

  cfg: SamConfig
  n: int
  widths: tuple[int, ...]  # hidden widths, then the output width

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    for i, width in enumerate(self.widths):
      kernel = self.param(f"kernel_{i}", kernel_init((None, "embed", "mlp")),
                          (self.n, x.shape[-1], width), cfg.param_dtype).astype(cfg.dtype)
      bias = self.param(f"bias_{i}", zeros_init((None, "mlp")), (self.n, width),
                        cfg.param_dtype).astype(cfg.dtype)
      x = jnp.einsum("...nc,ncd->...nd", x, kernel) + bias
      if i < len(self.widths) - 1:
        x = nn.relu(x)
    return x


class TransposedConv2x2(nn.Module):
  """torch ConvTranspose2d(kernel 2, stride 2): every cell -> a 2x2 block. NHWC; kernel
  [C_in, 2, 2, C_out]."""

  features: int
  cfg: SamConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    kernel = self.param("kernel", kernel_init(("conv_in", "conv_spatial", "conv_spatial_w",
                                               None)),
                        (x.shape[-1], 2, 2, self.features), cfg.param_dtype).astype(cfg.dtype)
    bias = self.param("bias", zeros_init((None,)), (self.features,),
                      cfg.param_dtype).astype(cfg.dtype)
    b, h, w, _ = x.shape
    y = jnp.einsum("bhwc,cpqd->bhpwqd", x, kernel).reshape(b, 2 * h, 2 * w, self.features)
    return y + bias


class MaskDecoder(nn.Module):
  """(image [B, h, w, C], its positions [h, w, C], no-mask [C], tokens [B, P, N, C]) ->
  (mask logits [B, P, M, 4h, 4w], IoU predictions [B, P, M]); M = n_multimask if `multimask`,
  else 1 (the single-mask token)."""

  cfg: SamConfig

  @nn.compact
  def __call__(self, image, image_pos, no_mask, prompt_tokens, multimask: bool):
    cfg = self.cfg
    b, h, w, c = image.shape
    p = prompt_tokens.shape[1]
    n_masks = cfg.n_multimask + 1
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed"))
    iou_token = self.param("iou_token", init, (1, c), cfg.param_dtype)
    mask_tokens = self.param("mask_tokens", init, (n_masks, c), cfg.param_dtype)
    outputs = jnp.concatenate([iou_token, mask_tokens]).astype(cfg.dtype)
    tokens = jnp.concatenate(
        [jnp.broadcast_to(outputs, (b, p) + outputs.shape), prompt_tokens.astype(cfg.dtype)],
        axis=2).reshape(b * p, -1, c)
    # One copy of the image per prompt set, as the decoder updates the image tokens too.
    image = jnp.repeat((image + no_mask).reshape(b, 1, h * w, c), p, axis=1).reshape(b * p,
                                                                                    h * w, c)
    image_pos = image_pos.reshape(1, h * w, c)
    queries = tokens
    for i in range(cfg.decoder_depth):
      queries, image = TwoWayBlock(cfg, first=i == 0, name=f"block_{i}")(
          queries, image, tokens, image_pos)
    queries = queries + Attention(cfg, cfg.attention_downsample, name="final_token_to_image")(
        queries + tokens, image + image_pos, image)
    queries = layer_norm(cfg, 1e-5, "final_norm")(queries)

    upscaled = TransposedConv2x2(c // 4, cfg, name="upscale1")(image.reshape(b * p, h, w, c))
    upscaled = _GELU(layer_norm(cfg, 1e-6, "upscale_norm")(upscaled))
    upscaled = _GELU(TransposedConv2x2(c // 8, cfg, name="upscale2")(upscaled))
    hyper = Mlps(cfg, n_masks, (c, c, c // 8), name="hypernetworks")(queries[:, 1:1 + n_masks])
    masks = jnp.einsum("tmc,thwc->tmhw", hyper, upscaled)
    iou = Mlps(cfg, 1, (cfg.iou_head_width, cfg.iou_head_width, n_masks),
               name="iou_head")(queries[:, :1])[:, 0]
    keep = slice(1, None) if multimask else slice(0, 1)
    return (masks[:, keep].reshape(b, p, -1, 4 * h, 4 * w),
            iou[:, keep].reshape(b, p, -1))
