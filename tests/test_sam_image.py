"""SAM's preprocessing and mask postprocessing against HF transformers' PIL processor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SamProcessor
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from sphinx_jax.data import sam_image


@pytest.fixture(scope="module")
def processor():
  return SamImageProcessorPil()


def random_image(width: int, height: int, seed: int) -> Image.Image:
  return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8))


@pytest.mark.parametrize("width, height", [(300, 200), (700, 1500)])  # upscaled, downscaled
def test_preprocess_matches_hf(processor, width, height):
  image = random_image(width, height, seed=width)
  ours = sam_image.preprocess(image)
  ref = processor(images=image, return_tensors="np")
  assert ours.original_size == (height, width) == tuple(ref["original_sizes"][0])
  assert ours.resized_size == tuple(ref["reshaped_input_sizes"][0])
  assert max(ours.resized_size) == 1024
  expected = ref["pixel_values"][0].transpose(1, 2, 0)
  assert ours.pixels.shape == expected.shape == (1024, 1024, 3)
  assert ours.pixels.dtype == np.float32
  np.testing.assert_allclose(ours.pixels, expected, rtol=0, atol=1e-5)


def test_resized_shape():
  assert sam_image.resized_shape(200, 300) == (683, 1024)  # 682.67 rounds up
  assert sam_image.resized_shape(1500, 700) == (1024, 478)
  assert sam_image.resized_shape(30, 50, longest=64) == (38, 64)


def test_prompts_match_hf(processor):
  image = random_image(700, 1500, seed=1)
  boxes = [[10.0, 20.5, 650.0, 1400.0], [0.0, 0.0, 700.0, 1500.0], [123.4, 5.6, 300.7, 999.9]]
  points = [[[5.5, 7.0], [699.0, 1499.0]]]
  ref = SamProcessor(processor)(images=image, input_boxes=[boxes], input_points=[points],
                                return_tensors="np")
  ours = sam_image.preprocess(image)
  got = sam_image.boxes_to_input(boxes, ours.original_size, ours.resized_size)
  assert got.dtype == np.float32 and got.shape == (3, 4)
  np.testing.assert_array_equal(got, ref["input_boxes"][0].astype(np.float32))
  got = sam_image.points_to_input(points, ours.original_size, ours.resized_size)
  np.testing.assert_array_equal(got, ref["input_points"][0].astype(np.float32))


@pytest.mark.parametrize("size, low_res, original_size", [
    (1024, 256, (1500, 700)),  # taller than wide
    (1024, 256, (480, 1200)),  # wider than tall
    (1024, 256, (300, 200)),  # smaller than the input on both sides
    (64, 16, (50, 30)),  # tiny SAMs
    (64, 16, (40, 90)),
])
def test_postprocess_masks_matches_hf(processor, size, low_res, original_size):
  logits = np.random.RandomState(size + original_size[0]).randn(1, 3, low_res, low_res)
  logits = logits.astype(np.float32)
  resized = sam_image.resized_shape(*original_size, longest=size)
  ref = processor.post_process_masks([torch.from_numpy(logits)], [original_size], [resized],
                                     binarize=False, pad_size={"height": size, "width": size})
  expected = ref[0].numpy()
  got = np.asarray(sam_image.postprocess_masks(logits, original_size, resized, size=size))
  assert got.shape == expected.shape == (1, 3, *original_size) and got.dtype == np.float32
  diff = np.abs(got - expected).max()
  flipped = int((np.asarray(sam_image.binarize(got)) != (expected > 0.0)).sum())
  print(f"{original_size}: max abs diff {diff:.1e}, {flipped} of {got.size} pixels differ")
  assert diff < 1e-5
  # To the pixel: a pixel may differ only where HF's logit is within rounding of the threshold.
  undecided = np.abs(expected) < 1e-5
  np.testing.assert_array_equal(np.asarray(sam_image.binarize(got))[~undecided],
                                (expected > 0.0)[~undecided])
