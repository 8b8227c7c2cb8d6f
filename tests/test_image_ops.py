"""Image operations against the reference's own computations: torch F.interpolate and PIL."""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sphinx_jax.configs import ACCESSORY_TYPES
from sphinx_jax.data.image import VIEW_PLANS, make_views, pad_to_square, preprocess, square, to_rgb
from sphinx_jax.data.records import read_image_file
from sphinx_jax.models.vision.normalize import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD,
                                                clip_to_imagenet)
from sphinx_jax.models.vision.resize import bicubic_resize, nearest_resize
from tests import sphinx_refs

RNG = np.random.default_rng(0)


def _images(n, h, w, c=3):
  return RNG.standard_normal((n, h, w, c)).astype(np.float32) * 2


def _torch(fn, x, dtype=torch.float32):
  """Run a torch NCHW op on NHWC numpy pixels; the result back as float32 NHWC numpy."""
  out = fn(torch.from_numpy(x).permute(0, 3, 1, 2).to(dtype))
  return out.float().permute(0, 2, 3, 1).numpy()


def _max_diff(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(np.asarray(a, np.float32) - b)))


def _half_mismatches(got, want):
  """How many values differ from torch's fp16 result; each may differ by one float16 ulp at most.

  Bit equality holds with this torch build; builds that fuse multiply-adds differently may flip a
  rare float16 rounding.
  """
  got = np.asarray(got, np.float32)
  ulp = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32)
  assert np.all(np.abs(got - want) <= ulp), _max_diff(got, want)
  mismatches = int(np.sum(got != want))
  assert mismatches <= 1e-4 * got.size, mismatches
  return mismatches


BICUBIC_CASES = [  # (in_hw, out_hw, scale_factor or None)
    ((448, 448), (224, 224), None),
    ((224, 224), (256, 256), None),
    ((37, 37), (16, 16), (16.1 / 37, 16.1 / 37)),
    ((37, 37), (16, 16), None),
    ((30, 50), (45, 20), None),
    ((13, 7), (29, 31), None),
    ((20, 30), (50, 12), (2.5, 0.4)),
    ((1024, 1024), (448, 448), None),
]


@pytest.mark.parametrize("in_hw,out_hw,scale", BICUBIC_CASES)
def test_bicubic_matches_torch(in_hw, out_hw, scale):
  x = _images(2, *in_hw)
  kwargs = dict(scale_factor=scale) if scale else dict(size=out_hw)
  want = _torch(lambda t: F.interpolate(t, mode="bicubic", align_corners=False, antialias=False,
                                        **kwargs), x)
  got = bicubic_resize(x, out_hw, scale_factor=scale, arithmetic="cpu")
  diff = _max_diff(got, want)
  print(f"bicubic {in_hw}->{out_hw} scale={scale}: max diff {diff:.2e}")
  assert diff < 1e-5


@pytest.mark.parametrize("in_hw,out_hw", [
    ((224, 224), (256, 256)), ((224, 224), (448, 448)), ((512, 512), (512, 512)),
    ((30, 50), (45, 20)), ((7, 11), (3, 5)), ((100, 100), (37, 61))])
def test_nearest_matches_torch(in_hw, out_hw):
  x = _images(2, *in_hw)
  want = _torch(lambda t: F.interpolate(t, size=out_hw, mode="nearest"), x)
  got = nearest_resize(x, out_hw)
  print(f"nearest {in_hw}->{out_hw}: max diff {_max_diff(got, want):.2e}")
  np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("in_hw,out_hw,scale", BICUBIC_CASES[:4] + BICUBIC_CASES[-1:])
def test_half_bicubic_matches_torch_half(in_hw, out_hw, scale):
  x = _images(1, *in_hw)
  kwargs = dict(scale_factor=scale) if scale else dict(size=out_hw)
  want = _torch(lambda t: F.interpolate(t, mode="bicubic", **kwargs), x, torch.float16)
  got = bicubic_resize(x, out_hw, scale_factor=scale, half=True, arithmetic="cpu")
  print(f"half bicubic {in_hw}->{out_hw}: max diff {_max_diff(got, want):.2e}, "
        f"{_half_mismatches(got, want)}/{got.size} values differ")
  nearest = _torch(lambda t: F.interpolate(t, size=(256, 256)), x[:, :224, :224], torch.float16)
  np.testing.assert_array_equal(np.asarray(nearest_resize(x[:, :224, :224], 256, half=True)),
                                nearest)


def _fma(a, b, c):
  """float32 a*b+c rounded once (the product is exact in float64)."""
  return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)


def _cuda_half_bicubic(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """F.interpolate(x.half(), mode='bicubic') as ATen's CUDA kernel computes it, written from
  UpSampleBicubic2d.cu (upsample_bicubic2d_out_frame) and UpSample.cuh: accscalar_t (float)
  scale, source index, coefficients and sums, fp16 loads, one rounding to fp16 at the store;
  nvcc contracts every a*b+c into an fma (its default -fmad=true). x: [H, W, C] float32."""
  f32 = np.float32
  a = f32(-0.75)
  half = x.astype(np.float16).astype(f32)
  height, width = x.shape[:2]

  def source(in_size, out_size):  # area_pixel_compute_source_index(cubic=True)
    real = _fma(f32(in_size) / f32(out_size), np.arange(out_size, dtype=f32) + f32(0.5), f32(-0.5))
    index = np.floor(real)
    return index.astype(np.int64), real - index.astype(f32)

  def coefficients(t):  # get_cubic_upsample_coefficients
    conv1 = lambda v: _fma(_fma(a + 2, v, -(a + 3)) * v, v, f32(1))  # noqa: E731
    conv2 = lambda v: _fma(_fma(_fma(a, v, -5 * a), v, 8 * a), v, -4 * a)  # noqa: E731
    return [conv2(t + f32(1)), conv1(t), conv1(f32(1) - t), conv2(f32(1) - t + f32(1))]

  def interp(values, coeffs):  # cubic_interp1d: x0*c0 + x1*c1 + x2*c2 + x3*c3, contracted
    out = values[0] * coeffs[0]
    for v, c in zip(values[1:], coeffs[1:]):
      out = _fma(v, c, out)
    return out

  iy, ty = source(height, out_h)
  ix, tx = source(width, out_w)
  cx = [c[:, None] for c in coefficients(tx)]
  out = np.empty((out_h, out_w, x.shape[2]), np.float16)
  for oy in range(out_h):
    rows = []
    for k in range(4):  # upsample_get_value_bounded clamps each access to the border
      row = half[min(max(iy[oy] - 1 + k, 0), height - 1)]
      rows.append(interp([row[np.clip(ix - 1 + j, 0, width - 1)] for j in range(4)], cx))
    out[oy] = interp(rows, [c[oy] for c in coefficients(ty)]).astype(np.float16)
  return out.astype(np.float32)


@pytest.mark.parametrize("in_hw,out_hw", [((448, 448), (224, 224)), ((1024, 1024), (448, 448)),
                                          ((1024, 1024), (512, 512)), ((64, 64), (28, 28)),
                                          ((30, 50), (45, 20))])
def test_cuda_half_bicubic_matches_the_cuda_kernel_emulation(in_hw, out_hw):
  x = np.random.default_rng(1).standard_normal((1, *in_hw, 3)).astype(np.float32) * 2
  want = _cuda_half_bicubic(x[0], *out_hw)
  got = np.asarray(bicubic_resize(x, out_hw, half=True, arithmetic="cuda"))[0]
  cpu = np.asarray(bicubic_resize(x, out_hw, half=True, arithmetic="cpu"))[0]
  torch_cpu = _torch(lambda t: F.interpolate(t, size=out_hw, mode="bicubic"), x, torch.float16)[0]
  np.testing.assert_array_equal(cpu, torch_cpu)
  ulp = np.spacing(np.maximum(np.abs(got), np.abs(want)).astype(np.float16)).astype(np.float32)
  off_cuda, off_cpu = np.mean(got != want), np.mean(torch_cpu != want)
  print(f"half bicubic {in_hw}->{out_hw}, share of values off the CUDA emulation: ours "
        f"{off_cuda:.3%}, torch's CPU kernel {off_cpu:.1%}")
  # XLA's float32 sums are not nvcc's fma chain: a rare 1-ulp flip (docs: "Images").
  # (near zero, float32 cancellation in the sums exceeds an fp16 ulp: 1e-6 absolute there)
  assert np.all(np.abs(got - want) <= np.maximum(ulp, 1e-6)) and off_cuda <= 5e-4
  # where the weights are not exact in fp16, the CPU kernel is another arithmetic
  assert off_cpu == off_cuda or off_cpu > 20 * off_cuda


def test_clip_to_imagenet_matches_reference():
  x = _images(1, 4, 5)
  view = lambda v: torch.tensor(v).view(3, 1, 1)  # noqa: E731
  cm, cs, dm, ds = map(view, (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD))
  want = _torch(lambda t: (t * cs + cm - dm) / ds, x)
  light = _torch(lambda t: t * (cs / ds) + (cm - dm) / ds, x)
  got = clip_to_imagenet(x)
  print(f"clip_to_imagenet: max diff {_max_diff(got, want):.2e}, "
        f"vs the light variants' folded form {_max_diff(got, light):.2e}")
  assert _max_diff(got, want) < 1e-6


def _reference_transform(image, size):
  """accessory/data/transform.py padded_resize, written out (torchvision steps in torch)."""
  image = image.convert("RGB")
  w, h = image.size
  bg = tuple(int(x * 255) for x in CLIP_MEAN)
  if w > h:
    square = Image.new(image.mode, (w, w), bg)
    square.paste(image, (0, (w - h) // 2))
  elif h > w:
    square = Image.new(image.mode, (h, h), bg)
    square.paste(image, ((h - w) // 2, 0))
  else:
    square = image
  if square.size != (size, size):
    square = square.resize((size, size), Image.BICUBIC)
  t = torch.from_numpy(np.array(square)).permute(2, 0, 1).float().div(255)
  t = (t - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
  return t.permute(1, 2, 0).numpy(), square


def _pil(w, h, mode):
  channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
  pixels = RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)
  return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


@pytest.mark.parametrize("w,h,mode,size", [
    (301, 200, "RGB", 224),   # landscape, odd difference
    (200, 300, "RGB", 448),   # portrait, even difference
    (57, 64, "RGBA", 224),    # portrait, odd difference, upsampling, alpha dropped
    (90, 41, "L", 672),       # grayscale, landscape, odd difference
    (224, 224, "RGB", 224),   # already the target size
    (224, 181, "RGB", 224),   # padding only: offsets seen without a resize
    (1100, 1000, "RGB", 1024),
])
def test_preprocess_matches_pil_pipeline(w, h, mode, size):
  image = _pil(w, h, mode)
  want, square = _reference_transform(image, size)
  got = preprocess(image, size)
  assert got.dtype == np.float32 and got.shape == (size, size, 3)
  print(f"preprocess {mode} {w}x{h}->{size}: max diff {_max_diff(got, want):.2e}")
  np.testing.assert_array_equal(got, want)
  padded = pad_to_square(image.convert("RGB"))
  assert padded.size == (max(w, h),) * 2
  if w != h:
    assert padded.getpixel((0, 0)) == (122, 116, 104)
    assert padded.getpixel((max(w, h) - 1, max(w, h) - 1)) == (122, 116, 104)


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
  values = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535]], np.uint16)
  want = np.array([0, 0, 1, 1, 1, 2, 128, 255], np.uint8)  # round(v * 255 / 65535)
  path = tmp_path / "gray16.png"
  Image.fromarray(values).save(path)
  with Image.open(path) as image:
    assert image.mode in ("I;16", "I")  # as PIL opens 16-bit PNGs (newer, older versions)
    np.testing.assert_array_equal(square(image, 8)[3], np.repeat(want[:, None], 3, 1))
  np.testing.assert_array_equal(np.asarray(read_image_file(path)), np.repeat(want[None, :, None],
                                                                             3, 2))
  for mode, dtype in (("I;16B", ">u2"), ("I;16L", "<u2"), ("I", "<i4")):
    image = Image.frombytes(mode, (8, 1), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(image))[0, :, 1], want)
  beyond = Image.frombytes("I", (2, 1), np.array([-5, 70000], "<i4").tobytes())
  np.testing.assert_array_equal(np.asarray(to_rgb(beyond))[0, :, 0], [0, 255])  # clipped


def test_float_and_alpha_images_convert_as_pil():
  floats = np.array([[0.4, 0.6, 1.5, 254.5, 300, -3, np.nan, 128]], np.float32)
  np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(floats)))[0, :, 2],
                                [0, 0, 1, 254, 255, 0, 0, 128])  # 0..255, clipped, truncated
  for mode in ("L", "LA", "P", "PA", "RGBA", "CMYK"):
    image = Image.fromarray(RNG.integers(0, 256, (3, 4, 4), np.uint8)).convert(mode)  # RGBA
    np.testing.assert_array_equal(np.asarray(to_rgb(image)), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("name,shapes", [
    ("sphinx", ((1, 224), (1, 256))),
    ("sphinx_1k", ((5, 224), (5, 256))),
    ("sphinx_2k", ((10, 224), (10, 256))),
    ("sphinx_tiny", ((1, 224), (1, 512))),
    ("sphinx_tiny_1k", ((5, 224), (5, 512))),
])
def test_views_match_reference_tiling(name, shapes):
  plan = VIEW_PLANS[name]
  image = _images(1, plan.image_size, plan.image_size)[0]
  got = jax.jit(make_views, static_argnums=(1, 2))(image, plan, "cpu")
  llama_type = {v: k for k, v in ACCESSORY_TYPES.items()}[name]
  want = sphinx_refs.reference_views(image, llama_type, plan.vit.side, plan.convnext.input_side)
  for tower, (v, s) in zip(("vit", "convnext"), shapes):
    assert got[tower].shape == (v, s, s, 3) and plan.num_views == v
    assert getattr(plan, tower).input_side == s
    print(f"{name} {tower}: max diff {_max_diff(got[tower], want[tower]):.2e}, "
          f"{_half_mismatches(got[tower], want[tower])} values differ")


def test_views_keep_leading_axes_and_check_shape():
  plan = VIEW_PLANS["sphinx_1k"]
  batch = _images(2, 448, 448)
  views = make_views(batch, plan)
  assert views["vit"].shape == (2, 5, 224, 224, 3)
  assert views["convnext"].shape == (2, 5, 256, 256, 3)
  single = jax.jit(make_views, static_argnums=1)(batch[1], plan)
  for tower in views:
    np.testing.assert_array_equal(np.asarray(views[tower][1]), np.asarray(single[tower]))
  with pytest.raises(ValueError, match="448, 448, 3"):
    make_views(batch[:, :224], plan)
