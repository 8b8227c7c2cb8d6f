"""Torch-compatible image resizes in JAX, on float arrays laid out [..., H, W, C].

`jax.image.resize` uses Keys' a=-0.5 cubic and antialiases when downsampling, so it cannot
reproduce the reference's `F.interpolate`; these do. Source indices and weights depend only on
static sizes, so they are built in numpy with torch's float32 arithmetic; bicubic then sums 4
weighted taps per axis, width first, in the order of torch's kernel: bit-identical to torch's x86
CPU build in every case tested (other backends: float32 rounding apart).

`half=True` emulates the reference's `F.interpolate(x.half(), ...).to(x)`, with the arithmetic
of either torch kernel (`arithmetic`): 'cpu' (UpSampleKernel.cpp) rounds the interpolation
weights to float16 before summing in float32; 'cuda' (UpSampleBicubic2d.cu, the default: released
SPHINX runs on GPUs) computes source coordinates, weights and sums in float32 (`accscalar_t`),
multiply-adds contracted as nvcc does by default (-fmad=true), and rounds once to float16. The
two differ by one float16 ulp in a share of the values (docs/architecture.md, "Images").
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_CUBIC_A = np.float32(-0.75)  # torch's cubic convolution constant (PIL and Keys use -0.5)
ARITHMETICS = ("cuda", "cpu")
DEFAULT_ARITHMETIC = "cuda"


def _pair(v):
  return (v, v) if v is None or np.isscalar(v) else tuple(v)


def _fma(x, y, z) -> np.ndarray:
  """float32 x*y + z rounded once, as the fused multiply-adds of torch's compiled kernel."""
  return (np.float64(x) * np.float64(y) + np.float64(z)).astype(np.float32)


def _cubic_taps(in_size: int, out_size: int, scale_factor: float | None, arithmetic: str):
  """torch bicubic source taps [out, 4] (clamped to the border) and float32 weights [out, 4].

  Scale, source coordinate and cubic coefficients follow ATen's UpSample.h in float32. 'cpu':
  the multiply-adds fused where torch's x86 build fuses them, the index guarded and t clamped
  (bit-identical weights, tested); 'cuda': UpSampleBicubic2d.cu's floorf(real) and t = real -
  floor with every a*b+c contracted, as nvcc does.
  """
  f32 = np.float32
  # area_pixel_compute_scale: 1/scale_factor when given, else in/out.
  scale = f32(1.0 / scale_factor) if scale_factor else f32(in_size) / f32(out_size)
  src = _fma(scale, np.arange(out_size, dtype=f32) + f32(0.5), f32(-0.5))
  a, one = _CUBIC_A, f32(1)
  if arithmetic == "cpu":
    index = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - index.astype(f32), f32(0), f32(1))

    def near(x):  # |x| <= 1: ((a + 2) x - (a + 3)) x x + 1
      return _fma(a + 2, x, -(a + 3)) * x * x + one

    def far(x):  # 1 < |x| < 2: ((a x - 5a) x + 8a) x - 4a
      return _fma(_fma(a, x, -5 * a), x, 8 * a) * x - 4 * a
  elif arithmetic == "cuda":
    index = np.floor(src).astype(np.int64)
    t = src - index.astype(f32)

    def near(x):
      return _fma(_fma(a + 2, x, -(a + 3)) * x, x, one)

    def far(x):
      return _fma(_fma(_fma(a, x, -5 * a), x, 8 * a), x, -4 * a)
  else:
    raise ValueError(f"arithmetic {arithmetic!r} is not one of {ARITHMETICS}")

  weights = np.stack([far(t + one), near(t), near(one - t), far(one - t + one)], axis=-1)
  return np.clip(index[:, None] + np.arange(-1, 3), 0, in_size - 1), weights


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """torch legacy 'nearest' source index per output index: floor(dst * float32(in/out))."""
  dst = np.arange(out_size)
  if out_size == in_size:
    return dst
  if out_size == 2 * in_size:
    return dst >> 1
  scale = np.float32(in_size) / np.float32(out_size)
  return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), in_size - 1)


def _as_float32(x: jax.Array, half: bool) -> jax.Array:
  """x in float32, through float16 first when emulating torch's `.half()`."""
  return x.astype(jnp.float16).astype(jnp.float32) if half else x.astype(jnp.float32)


def _interpolate_axis(x: jax.Array, taps: np.ndarray, weights: np.ndarray, axis: int):
  """Weighted sum of the 4 taps along `axis`, term by term in torch's order."""
  # The barrier stops XLA specialising constant taps and weights (strided slices, uniform weights
  # at exact 2x), which would reorder the float32 sums.
  taps, weights = jax.lax.optimization_barrier((jnp.asarray(taps), jnp.asarray(weights)))
  shape = [1] * x.ndim
  shape[axis] = -1
  out = None
  for k in range(4):
    term = jnp.take(x, taps[:, k], axis=axis) * weights[:, k].reshape(shape)
    out = term if out is None else out + term
  return out


@functools.partial(jax.jit, static_argnames=("size", "scale_factor", "half", "arithmetic"))
def bicubic_resize(x: jax.Array, size: int | tuple[int, int],
                   scale_factor: float | tuple[float, float] | None = None, *,
                   half: bool = False, arithmetic: str = DEFAULT_ARITHMETIC) -> jax.Array:
  """torch `F.interpolate(mode='bicubic', align_corners=False, antialias=False)` of [..., H, W, C]
  as torch's `arithmetic` kernel computes it ('cuda' or 'cpu').

  With `scale_factor` (sh, sw) source coordinates use 1/scale_factor, as torch does when
  recompute_scale_factor is None; `size` is still the output size (torch's floor(in * scale)).
  Jitted even when called eagerly: XLA's fused multiply-adds are what make the sums match torch's.
  """
  out_h, out_w = _pair(size)
  scale_h, scale_w = _pair(scale_factor)
  # torch CPU stores weights in the input dtype; CUDA keeps them in float32 (accscalar_t).
  tap_dtype = np.float16 if half and arithmetic == "cpu" else np.float32
  y = _as_float32(x, half)
  for axis, out_size, scale in ((-2, out_w, scale_w), (-3, out_h, scale_h)):  # W first, as torch
    taps, weights = _cubic_taps(y.shape[axis], out_size, scale, arithmetic)
    y = _interpolate_axis(y, taps, weights.astype(tap_dtype).astype(np.float32), axis)
  return _as_float32(y, half).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("size", "half"))
def nearest_resize(x: jax.Array, size: int | tuple[int, int], *, half: bool = False) -> jax.Array:
  """torch `F.interpolate(mode='nearest')` (the legacy, asymmetric one) of [..., H, W, C]."""
  out_h, out_w = _pair(size)
  y = jnp.take(x, jnp.asarray(nearest_indices(x.shape[-3], out_h)), axis=-3)
  y = jnp.take(y, jnp.asarray(nearest_indices(x.shape[-2], out_w)), axis=-2)
  return _as_float32(y, half).astype(x.dtype)
