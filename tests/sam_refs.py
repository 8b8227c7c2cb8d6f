"""PyTorch references for the SAM tests: a tiny random HF `SamModel` and its tensors under the
official `segment_anything` names (the inverse of HF's conversion script, written out here
independently of our converter)."""
import re

import numpy as np
import transformers

from tests.vision_refs import numpy_state, randomize


def tiny_hf_sam(seed: int = 0, decoder_eps: float = 1e-6) -> transformers.SamModel:
  """64 px images, 8 px patches (an 8x8 grid), 3x3 windows (padded to 9x9), global blocks 1
  and 3, 32 channels (8 after upscaling: shardable over 8 fake devices), a 2-block decoder
  whose two-way LayerNorms have `decoder_eps` (HF's default 1e-6; segment_anything's 1e-5)."""
  cfg = transformers.SamConfig(
      vision_config=dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_dim=64,
                         image_size=64, patch_size=8, window_size=3, global_attn_indexes=[1, 3],
                         output_channels=32, num_pos_feats=16),
      prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8,
                                 mask_input_channels=4),
      mask_decoder_config=dict(hidden_size=32, mlp_dim=32, num_hidden_layers=2,
                               num_attention_heads=2, iou_head_hidden_dim=24,
                               layer_norm_eps=decoder_eps))
  return randomize(transformers.SamModel(cfg), seed)


def real_geometry_hf_sam(seed: int = 0) -> transformers.SamModel:
  """Every size of a released SAM but the encoder's width and depth: 1024 px, 16 px patches
  (a 64x64 grid), 14x14 windows padded to 70x70, head_dim 64, 256 channels, the full decoder."""
  cfg = transformers.SamConfig(vision_config=dict(hidden_size=64, num_hidden_layers=2,
                                                  num_attention_heads=1, mlp_dim=128,
                                                  global_attn_indexes=[1]))
  return randomize(transformers.SamModel(cfg), seed)


_RENAMES = [  # HF -> segment_anything, applied in order
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^shared_image_embedding\.positional_embedding$",
     "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r".transformer.layers.\1.norm\2."),
    (r"\.transformer\.layer_norm_final_attn\.", ".transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r".\1.layers.1."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_in\.", r".\1.layers.0."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.proj_out\.", r".\1.layers.2."),
]


def official_state(model: transformers.SamModel) -> dict:
  """The model's tensors under segment_anything's names (the tied prompt-encoder copy of the
  Fourier matrix dropped, as the official model has one)."""
  out = {}
  for key, value in numpy_state(model).items():
    if key == "prompt_encoder.shared_embedding.positional_embedding":
      continue
    for pattern, repl in _RENAMES:
      key = re.sub(pattern, repl, key)
    out[key] = value
  return out


def nchw(x: np.ndarray):
  import torch
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
