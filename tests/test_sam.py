"""SAM in Flax against HF transformers' SamModel (tiny random configs, fp32, CPU), the
conversion of official segment_anything files and HF directories, and the cascade: SPHINX's
boxes as SAM box prompts (`Sphinx.segment`, `launch chat --sam`)."""
import functools
import json
import math

import jax
import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from launch.__main__ import main
from sphinx_jax import Sphinx, sharding
from sphinx_jax.checkpoints import params_io
from sphinx_jax.checkpoints.sam import (HF, HF_UNUSED, OFFICIAL, OFFICIAL_UNUSED, _HF_BLOCK,
                                        _OFFICIAL_BLOCK, convert_sam, infer_config, sam_parts)
from sphinx_jax.checkpoints.torch_io import ConversionError
from sphinx_jax.checkpoints.vision import Source
from sphinx_jax.configs import sam_preset
from sphinx_jax.data import tasks
from sphinx_jax.inference import grounding, segment
from sphinx_jax.inference.segment import SegmentAnything
from sphinx_jax.models.sam.sam import Sam
from sphinx_jax.util.errors import UserError
from tests.sam_refs import nchw, official_state, real_geometry_hf_sam, tiny_hf_sam
from tests.trained_square import QUESTION, scene
from tests.vision_refs import numpy_state

TOL = 1e-4


@functools.cache
def reference():
  return tiny_hf_sam()


def converted(state: dict, table, unused, block, **kw):
  src = Source(state.keys(), state.__getitem__, "", table, ignore=unused)
  cfg = infer_config(src, block, **kw)
  return cfg, params_io.assemble(sam_parts(src, cfg))


@functools.cache
def ours():
  hf = reference()
  return converted(numpy_state(hf), HF, HF_UNUSED, _HF_BLOCK, decoder_heads=2,
                   decoder_norm_eps=hf.config.mask_decoder_config.layer_norm_eps)


def check(name, got, want):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  diff = float(np.abs(got - want).max())
  print(f"{name}: max abs diff {diff:.2e} (max |x| {np.abs(want).max():.2f})")
  assert diff < TOL, name


def prompts(seed=0):
  rng = np.random.RandomState(seed)
  xy = rng.uniform(0, 40, (2, 3, 2)).astype(np.float32)
  boxes = np.concatenate([xy, xy + rng.uniform(8, 24, (2, 3, 2))], -1).astype(np.float32)
  points = rng.uniform(0, 64, (2, 3, 2, 2)).astype(np.float32)
  labels = np.array([[[1, 0], [1, 1], [0, -10]]] * 2, np.int64)
  return boxes, points, labels


@pytest.mark.parametrize("kind", ["boxes", "points", "both"])
@pytest.mark.parametrize("multimask", [True, False])
def test_matches_hf(kind, multimask):
  hf = reference()
  cfg, params = ours()
  pixels = np.random.RandomState(1).randn(2, 64, 64, 3).astype(np.float32)
  boxes, points, labels = prompts()
  use_boxes, use_points = kind in ("boxes", "both"), kind in ("points", "both")
  with torch.no_grad():
    out = hf(pixel_values=nchw(pixels),
             input_boxes=torch.from_numpy(boxes) if use_boxes else None,
             input_points=torch.from_numpy(points) if use_points else None,
             input_labels=torch.from_numpy(labels) if use_points else None,
             multimask_output=multimask)
    want_embedding = hf.get_image_embeddings(nchw(pixels)).numpy().transpose(0, 2, 3, 1)
  model = Sam(cfg)
  embedding = model.apply({"params": params}, pixels, method=Sam.embed)
  check("image embedding", embedding, want_embedding)
  masks, iou = model.apply(
      {"params": params}, embedding, points if use_points else None,
      labels if use_points else None, boxes if use_boxes else None, multimask=multimask,
      method=Sam.segment)
  check(f"mask logits ({kind}, multimask={multimask})", masks, out.pred_masks.numpy())
  check(f"IoU ({kind}, multimask={multimask})", iou, out.iou_scores.numpy())


def run_both(hf, cfg, params, pixels, boxes, points, labels):
  """(ours, HF's) (mask logits, IoU) for boxes and points together, multimask."""
  with torch.no_grad():
    out = hf(pixel_values=nchw(pixels), input_boxes=torch.from_numpy(boxes),
             input_points=torch.from_numpy(points), input_labels=torch.from_numpy(labels))
  masks, iou = Sam(cfg).apply({"params": params}, pixels, points, labels, boxes)
  return (masks, iou), (out.pred_masks.numpy(), out.iou_scores.numpy())


def test_matches_hf_at_the_released_geometry():
  """The sizes the tiny config cannot reach: a 64x64 grid in 14x14 windows padded to 70x70,
  global attention over 4096 tokens, head_dim 64, 256 channels, 8 decoder heads."""
  hf = real_geometry_hf_sam()
  cfg, params = converted(numpy_state(hf), HF, HF_UNUSED, _HF_BLOCK, decoder_heads=8,
                          decoder_norm_eps=hf.config.mask_decoder_config.layer_norm_eps)
  assert (cfg.grid, cfg.window_size, cfg.head_dim, cfg.channels) == (64, 14, 64, 256)
  boxes, points, labels = prompts()
  (masks, iou), (want_masks, want_iou) = run_both(
      hf, cfg, params, np.random.RandomState(2).randn(1, 1024, 1024, 3).astype(np.float32),
      boxes[:1] * 16, points[:1] * 16, labels[:1])
  for name, got, want in (("mask logits", masks, want_masks), ("IoU", iou, want_iou)):
    diff = float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
    print(f"{name} at 1024 px: max abs diff {diff:.1e} of the largest value")
    assert diff < 1e-4


def test_official_layout_computes_as_segment_anything():
  """segment_anything's two-way LayerNorms use eps 1e-5: its layout converts to that, and
  equals an HF model built with the same eps."""
  hf = tiny_hf_sam(seed=5, decoder_eps=1e-5)
  cfg, params = converted(official_state(hf), OFFICIAL, OFFICIAL_UNUSED, _OFFICIAL_BLOCK,
                          decoder_heads=2)
  assert cfg.decoder_norm_eps == 1e-5
  boxes, points, labels = prompts()
  (masks, iou), (want_masks, want_iou) = run_both(
      hf, cfg, params, np.random.RandomState(1).randn(2, 64, 64, 3).astype(np.float32), boxes,
      points, labels)
  check("mask logits (official layout)", masks, want_masks)
  check("IoU (official layout)", iou, want_iou)


def test_official_layout_and_hf_directory_convert_to_the_same_params(tmp_path):
  hf = reference()
  cfg, params = ours()
  official = official_state(hf)
  torch.save({k: torch.from_numpy(v) for k, v in official.items()}, tmp_path / "sam_vit_t.pth")
  dst = convert_sam(tmp_path / "sam_vit_t.pth", tmp_path / "from_official")
  hf.save_pretrained(tmp_path / "hf")
  dst_hf = convert_sam(tmp_path / "hf", tmp_path / "from_hf")
  for d, eps in ((dst, 1e-5), (dst_hf, hf.config.mask_decoder_config.layer_norm_eps)):
    stored = params_io.read_config(d)
    assert stored["model"] == "sam" and stored["decoder_norm_eps"] == eps
    assert stored["decoder_heads"] == (8 if d == dst else 2)
    loaded = SegmentAnything.from_pretrained(d).params["params"]
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_bad_files_are_named(tmp_path):
  official = official_state(reference())
  path = tmp_path / "sam.pth"
  torch.save({k: torch.from_numpy(v) for k, v in official.items()}, path)
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(path.read_bytes()[:2000])
  with pytest.raises(ConversionError, match=r"truncated\.pth: cannot read"):
    convert_sam(truncated, tmp_path / "out1")
  missing = {k: v for k, v in official.items() if k != "image_encoder.blocks.2.attn.proj.weight"}
  torch.save({k: torch.from_numpy(v) for k, v in missing.items()}, tmp_path / "missing.pth")
  with pytest.raises(ConversionError, match=r"missing\.pth: missing key "
                                            r"'image_encoder\.blocks\.2\.attn\.proj\.weight'$"):
    convert_sam(tmp_path / "missing.pth", tmp_path / "out1")
  extra = {**official, "image_encoder.blocks.0.attn.extra": np.zeros(3, np.float32)}
  with pytest.raises(ConversionError, match=r"unmapped key.*blocks\.0\.attn\.extra"):
    converted(extra, OFFICIAL, OFFICIAL_UNUSED, _OFFICIAL_BLOCK)
  wrong = {**official, "mask_decoder.iou_token.weight": np.zeros((2, 32), np.float32)}
  with pytest.raises(ConversionError, match=r"'mask_decoder\.iou_token\.weight' has shape"):
    converted(wrong, OFFICIAL, OFFICIAL_UNUSED, _OFFICIAL_BLOCK)
  assert not (tmp_path / "out1").exists()


def hf_pipeline_masks(hf, image, boxes):
  """HF's processor (64 px longest side), SamModel and post_process_masks, single-mask output."""
  from transformers import SamProcessor
  from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
  pad = {"height": 64, "width": 64}
  processor = SamProcessor(SamImageProcessorPil(size={"longest_edge": 64}, pad_size=pad))
  inputs = processor(images=image, input_boxes=[boxes], return_tensors="pt")
  with torch.no_grad():
    out = hf(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(),
             multimask_output=False)
  logits = processor.image_processor.post_process_masks(
      out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False,
      pad_size=pad)[0][:, 0].numpy()
  return logits, out.iou_scores[0, :, 0].numpy()


def test_masks_equal_hf_end_to_end_on_a_non_square_image(tiny_sam):
  hf, ckpt = tiny_sam
  sam = SegmentAnything.from_pretrained(ckpt)
  image = Image.fromarray(np.random.RandomState(3).randint(0, 256, (50, 80, 3), np.uint8))
  boxes = [[5.0, 5.0, 40.0, 30.0], [30.0, 10.0, 70.0, 45.0], [0.0, 0.0, 80.0, 50.0]]
  got = sam.masks(image, boxes)
  logits, scores = hf_pipeline_masks(hf, image, boxes)
  assert got.masks.shape == (3, 50, 80) and got.masks.dtype == bool
  decided = np.abs(logits) > 1e-5
  print(f"{(got.masks != (logits > 0)).sum()} of {got.masks.size} pixels differ; "
        f"{got.masks.mean():.2f} of the pixels are in a mask")
  np.testing.assert_array_equal(got.masks[decided], (logits > 0)[decided])
  check("IoU", got.scores, scores)
  alone = [sam.masks(image, [box]) for box in boxes]  # 3 boxes were one call of 4 rows
  np.testing.assert_array_equal(got.masks, np.concatenate([a.masks for a in alone]))
  assert sam.masks(image, []).masks.shape == (0, 50, 80)


def test_sphinx_boxes_become_sam_masks(trained_sphinx, tiny_sam, tmp_path, capsys):
  sphinx, sam = Sphinx.from_pretrained(trained_sphinx), SegmentAnything.from_pretrained(tiny_sam[1])
  image = scene("red")
  result = sphinx.segment(image, tasks.DETECTION, sam, max_new_tokens=32)
  print(result.answer)
  assert result.phrases == ["red square"]
  np.testing.assert_allclose(result.boxes, [[16, 16, 48, 48]])
  assert result.masks.shape == (1, 64, 64) and result.message == "1 mask(s)"
  np.testing.assert_array_equal(result.masks, sam.masks(image, result.boxes).masks)
  none = sphinx.segment(image, QUESTION, sam, max_new_tokens=8)
  assert none.answer == "red" and none.masks.shape == (0, 64, 64)
  assert "the answer has no boxes, so there is nothing to segment" in none.message

  image.save(tmp_path / "red.png")
  chat = ["chat", "--checkpoint", str(trained_sphinx), "--image", str(tmp_path / "red.png"),
          "--sam", str(tiny_sam[1]), "--masks-out", str(tmp_path / "masks.png"),
          "--max-new-tokens", "32", "--prompt"]
  assert main(chat + [tasks.DETECTION]) == 0
  assert f"[1 mask(s) drawn in {tmp_path / 'masks.png'}]" in capsys.readouterr().out
  drawn = np.asarray(Image.open(tmp_path / "masks.png").convert("RGB"), np.int32)
  plain = np.asarray(grounding.upscaled(image), np.int32)
  assert drawn.shape == plain.shape == (512, 512, 3)  # enlarged x8 to reach 480
  tinted = result.masks[0].repeat(8, 0).repeat(8, 1)
  changed = np.abs(drawn - plain).sum(-1) > 0
  assert changed[tinted].mean() > 0.9  # every mask pixel is tinted (labels cover a few more)
  (tmp_path / "masks.png").unlink()
  assert main(chat + [QUESTION]) == 0
  assert "[the answer has no boxes, so there is nothing to segment" in capsys.readouterr().out
  assert not (tmp_path / "masks.png").exists()
  assert main(chat[:-5] + ["--prompt", QUESTION, "--sam", str(tiny_sam[1])]) == 1
  assert "--sam and --masks-out go together" in capsys.readouterr().err


@pytest.mark.parametrize("preset,hf_vision", [
    ("sam_vit_b", {}),
    ("sam_vit_l", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       global_attn_indexes=[5, 11, 17, 23])),
    ("sam_vit_h", dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                       global_attn_indexes=[7, 15, 23, 31])),
])
def test_presets_shapes_shardings_and_sizes(preset, hf_vision):
  """ViT-B/L/H by shape only: HF's SamModel of the same size (on the meta device) has as many
  parameters, less the mask-prompt encoder we skip and its tied copy of the Fourier matrix."""
  cfg = sam_preset(preset)
  module = Sam(cfg)
  x = jax.ShapeDtypeStruct((1, 1024, 1024, 3), np.float32)
  boxes = jax.ShapeDtypeStruct((1, 5, 4), np.float32)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
  abstract, shardings = sharding.param_shardings(lambda k, x, b: module.init(k, x, boxes=b),
                                                 mesh, jax.random.key(0), x, boxes)
  with sharding.use_mesh(mesh):
    masks, iou = jax.eval_shape(lambda p, x, b: module.apply(p, x, boxes=b), abstract, x, boxes)
  assert masks.shape == (1, 5, 3, 256, 256) and iou.shape == (1, 5, 3)
  qkv = shardings["params"]["image_encoder"]["layers"]["global"]["attn"]["wq"].spec
  assert qkv == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  with torch.device("meta"):
    hf = transformers.SamModel(transformers.SamConfig(vision_config=hf_vision))
  kept = sum(p.numel() for n, p in hf.named_parameters(remove_duplicate=False)
             if ".mask_embed." not in n and "prompt_encoder.shared_embedding" not in n)
  ours_n = sum(math.prod(a.shape) for a in jax.tree.leaves(abstract))
  print(f"{preset}: {ours_n:,} parameters")
  assert ours_n == kept


def test_odd_boxes_and_images(tiny_sam):
  sam = SegmentAnything.from_pretrained(tiny_sam[1])
  image = Image.fromarray(np.random.RandomState(4).randint(0, 256, (40, 100, 3), np.uint8))
  # a box of the answer beyond the image is skipped and counted; keypoints are not boxes
  answer = ("<p>cat</p>[0.10,0.30,0.50,0.60;1.10,0.20,1.30,0.40] <p>dog</p>[0.60,0.35,0.90,0.65]"
            " <p>nose</p>[0.20,0.45]")
  result = segment.segment_answer(sam, image, answer)
  assert result.phrases == ["cat", "dog"] and list(result.groups) == [0, 1]
  assert result.masks.shape == (2, 40, 100) and result.scores.dtype == np.float32
  assert result.message == "2 mask(s); 1 box(es) outside the image skipped"
  np.testing.assert_allclose(result.boxes[0], [10, 0, 50, 30], atol=1e-4)  # to_image: -30 pad
  assert segment.overlay(image, result).size == (1200, 480)  # x12: the short side reaches 480
  reversed_corners = sam.masks(image, [[50, 30, 10, 0]])
  np.testing.assert_array_equal(reversed_corners.masks, sam.masks(image, [[10, 0, 50, 30]]).masks)
  for bad in ([[1, 2, 3]], [[0, 0, float("nan"), 4]], [1, 2, 3, 4]):
    with pytest.raises(UserError, match="boxes must be finite"):
      sam.masks(image, bad)
  thin = Image.new("RGB", (3000, 1))  # resized to 64 x 1 (not 0) rows
  assert sam.masks(thin, [[0, 0, 3000, 1]]).masks.shape == (1, 1, 3000)


def test_a_checkpoint_that_is_not_sam_is_named(tiny_sam, trained_sphinx, tmp_path):
  with pytest.raises(params_io.CheckpointError, match=r"config\.json: model 'sphinx' is not a SAM"):
    SegmentAnything.from_pretrained(trained_sphinx)
  config = params_io.read_config(tiny_sam[1])
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "config.json").write_text(json.dumps({**config, "n_heads": 0}))
  with pytest.raises(params_io.CheckpointError,
                     match=r"bad/config\.json: not a SAM config \(n_heads 0: must be a positive"):
    segment.read_config(tmp_path / "bad")
