"""Weight-only quantization of the LLM's matmul weights, stored as Qwix `QArray`s.

Only the LLM's projections (attention wq/wk/wv/wo, feed-forward w1/w2/w3, the output head) are
quantized; the towers, the mixer, the norms and the embeddings keep the run's dtype (the
reference's NF4 fix skipped the vision towers as well). A quantized weight is a leaf of the params
tree like any other: the model dequantizes it to the compute dtype right where it is used
(`weight`), inside the scanned layer, so only one layer's float weights exist at a time.

Schemes: 'int8', one scale per output channel (the contraction axes share it); 'int4', one scale
per group of `INT4_GROUP` consecutive inputs along the last contraction axis; 'nf4', grouped as
int4 but on QLoRA's 4-bit NormalFloat grid (the reference's bitsandbytes choice), whose levels
follow normally distributed weights. Scales keep the weight's float dtype. A scanned stack
quantizes each layer on its own (the layer axis is a channel axis), so quantizing a stack equals
stacking quantized layers, which is what loading layer by layer does (checkpoints.params_io).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import qwix
from jax.sharding import NamedSharding, PartitionSpec

from sphinx_jax.util.errors import UserError

SCHEMES = ("int8", "int4", "nf4")
INT4_GROUP = 128
# A projection's contraction axes in its per-layer shape (wo is [heads, head_dim, dim]).
CONTRACTION = {"wq": (0,), "wk": (0,), "wv": (0,), "wo": (0, 1), "w1": (0,), "w3": (0,),
               "w2": (0,)}
HEAD = ("output", "kernel")  # the output head [dim, vocab], contraction axis 0
QArray = qwix.QArray


def check_scheme(scheme: str | None) -> None:
  if scheme is not None and scheme not in SCHEMES:
    raise UserError(f"quantize {scheme!r} is not one of {SCHEMES}")


def target(path: tuple[str, ...]) -> tuple[tuple[int, ...], bool] | None:
  """(contraction axes, stacked) of the LLM weight at `path` (keys from the LLM's root; a layer
  index after 'layers' marks a single layer on disk), or None when it stays float."""
  if tuple(path[-2:]) == HEAD:
    return (0,), False
  if "layers" not in path or path[-1] not in CONTRACTION:
    return None
  after = path[path.index("layers") + 1]
  return CONTRACTION[path[-1]], not after.isdigit()


def _how(shape: tuple[int, ...], contraction: tuple[int, ...], scheme: str):
  """(channelwise axes, tiled axes) of a weight: int8 reduces over the contraction axes; int4
  and nf4 tile the last contraction axis into groups and keep every other axis per channel."""
  if scheme == "int8":
    return tuple(a for a in range(len(shape)) if a not in contraction), {}
  tiled = contraction[-1]
  group = math.gcd(INT4_GROUP, shape[tiled])
  return tuple(a for a in range(len(shape)) if a != tiled), {tiled: group}


def quantize(w: jax.Array, contraction: tuple[int, ...], scheme: str,
             stacked: bool = False) -> QArray:
  """`w` quantized by `scheme`; `stacked`: w has a leading layer axis before its own axes."""
  check_scheme(scheme)
  if stacked:
    contraction = tuple(a + 1 for a in contraction)
  channels, tiles = _how(w.shape, contraction, scheme)
  qtype = "nf4" if scheme == "nf4" else getattr(jnp, scheme)
  return qwix.quantize(w, qtype, channelwise_axes=channels, tiled_axes=tiles)


def quantize_llm(llm: dict, scheme: str) -> dict:
  """The LLM params (stacked, in memory) with every matmul weight quantized."""
  def one(path, w):
    found = target(tuple(_name(k) for k in path))
    return w if found is None else quantize(w, found[0], scheme, found[1])
  return jax.tree_util.tree_map_with_path(one, llm)


def abstract_llm(abstract: dict, scheme: str) -> dict:
  """ShapeDtypeStructs of the quantized LLM from the float ones (carrying shardings): values
  sharded as their weight, scales as their weight on the axes they keep."""
  def one(path, leaf):
    found = target(tuple(_name(k) for k in path))
    if found is None:
      return leaf
    out = jax.eval_shape(lambda w: quantize(w, found[0], scheme, found[1]), leaf)
    return QArray(_with_sharding(out.qvalue, leaf.sharding),
                  _with_sharding(out.scale, _scale_sharding(leaf.sharding, out.scale.shape,
                                                            leaf.shape)),
                  qtype=out.qtype)
  return jax.tree_util.tree_map_with_path(one, abstract)


def float_abstract(abstract):
  """The float weights a quantized abstract's QArrays come from (the values' shardings)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.scale.dtype, sharding=x.qvalue.sharding)
      if isinstance(x, QArray) else x, abstract, is_leaf=lambda x: isinstance(x, QArray))


def _with_sharding(leaf, sharding):
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _scale_sharding(sharding, scale_shape, shape):
  """A scale axis smaller than its weight's (reduced or grouped) is not sharded."""
  if not isinstance(sharding, NamedSharding):
    return sharding
  spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
  return NamedSharding(sharding.mesh, PartitionSpec(
      *(s if n == m else None for s, n, m in zip(spec, scale_shape, shape))))


def weight(param, dtype) -> jax.Array:
  """A weight in the compute dtype: a QArray dequantized (its scale cast first), else cast."""
  if isinstance(param, QArray):
    return qwix.dequantize(param.astype(dtype))
  return param.astype(dtype)


def scheme_of(tree) -> str | None:
  """The scheme of the quantized weights in `tree`, or None if it holds none."""
  for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, QArray)):
    if isinstance(leaf, QArray):
      return leaf.qtype if isinstance(leaf.qtype, str) else jnp.dtype(leaf.qtype).name
  return None


def nbytes(tree) -> int:
  """Bytes of a params tree as an accelerator stores it: int4 values at half a byte (XLA packs
  them on GPU and TPU; numpy on the host keeps a byte each)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    bits = jnp.iinfo(leaf.dtype).bits if jnp.issubdtype(leaf.dtype, jnp.integer) else \
        jnp.finfo(leaf.dtype).bits
    total += math.prod(leaf.shape) * bits // 8
  return total


def _name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
