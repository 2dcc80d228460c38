"""Flax NNX modules built from a `SqueezeNetSpec`: FireModule and SqueezeNet.

Inputs are NHWC. Every channel count comes from the spec. Parameters are float32;
`dtype` sets the compute dtype (e.g. jnp.bfloat16 on accelerators). Dropout takes
an explicit key so that the training step stays a pure function of pytrees.

For speed on CPU (docs/performance.md) 1x1 convolutions run as matmuls, max pools
as maxima of strided slices, and conv1 is pooled before its bias and ReLU; the
outputs equal the textbook formulation (tests/test_model.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import spec as spec_lib


def _kernel_init(init: str):
  if init == 'caffe':  # Caffe's "xavier" filler: U(+-sqrt(3 / fan_in)).
    return nnx.initializers.lecun_uniform()
  return nnx.initializers.he_uniform()  # torchvision: kaiming_uniform_(a=0).


@jax.custom_jvp
def _max_first(a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.maximum whose gradient goes to `a` on ties (jnp.maximum splits it in half)."""
  return jnp.maximum(a, b)


@_max_first.defjvp
def _max_first_jvp(primals, tangents):
  (a, b), (da, db) = primals, tangents
  # One compare and a select: the tie-splitting of jnp.maximum costs two
  # compares, selects and a division per element in the backward pass.
  return jnp.maximum(a, b), jnp.where(a >= b, da, db)


def max_pool_ceil(x: jax.Array, kernel: int = 3, stride: int = 2) -> jax.Array:
  """Unpadded max pool that rounds its output size up (Caffe, torchvision ceil_mode).

  Written as the maximum of strided slices (rows, then columns) rather than
  `lax.reduce_window`: the forward values are identical, and the gradient is a
  few fused elementwise ops instead of XLA:CPU's select-and-scatter expansion
  (an argmax reduce-window plus a scatter), the largest cost of the CPU train
  step before this change (docs/performance.md). On exact ties the gradient
  goes to one of the tied elements, as in Caffe and PyTorch.
  """
  h, w = x.shape[1:3]
  oh, ow = spec_lib.pool_output_size(h, kernel, stride), spec_lib.pool_output_size(w, kernel, stride)
  pad_h, pad_w = (oh - 1) * stride + kernel - h, (ow - 1) * stride + kernel - w
  x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
  rows = [x[:, i:i + (oh - 1) * stride + 1:stride] for i in range(kernel)]
  x = functools.reduce(_max_first, rows)
  cols = [x[:, :, j:j + (ow - 1) * stride + 1:stride] for j in range(kernel)]
  return functools.reduce(_max_first, cols)


def pointwise(layer: nnx.Conv, x: jax.Array) -> jax.Array:
  """`layer(x)` for a 1x1, stride-1 convolution, written as a matmul over channels.

  XLA:CPU runs the matmul and its two gradient matmuls faster than the
  convolution and its gradient convolutions (docs/performance.md); on GPU and
  TPU XLA lowers both forms to the same GEMM.
  """
  bias = layer.bias[...] if layer.bias is not None else None
  x, kernel, bias = layer.promote_dtype((x, layer.kernel[...], bias), dtype=layer.dtype)
  y = jnp.einsum('...c,co->...o', x, kernel[0, 0], precision=layer.precision)
  return y if bias is None else y + bias


def conv_without_bias(layer: nnx.Conv, x: jax.Array) -> jax.Array:
  """`layer(x)` minus its bias (NHWC, HWIO), for adding the bias after a pool."""
  x, kernel = layer.promote_dtype((x, layer.kernel[...]), dtype=layer.dtype)
  strides = layer.strides if isinstance(layer.strides, (tuple, list)) else (layer.strides,) * 2
  return jax.lax.conv_general_dilated(
      x, kernel, tuple(strides), tuple(map(tuple, layer.padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=layer.precision)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when key is None (evaluation)."""
  if key is None or rate == 0:
    return x
  keep = jax.random.bernoulli(key, 1 - rate, x.shape)
  return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)


class FireModule(nnx.Module):
  """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat (1x1 first).

  An expand branch with zero filters (pct_3x3 of 0 or 1) is not built. The bypass
  of `dims.bypass` is applied here: 'simple' adds the input, 'complex' adds a
  1x1 conv (+ ReLU, as in the authors' generator) of the input; no ReLU after
  the add.
  """

  def __init__(self, dims: spec_lib.FireDims, *, kernel_init, dtype=None,
               rngs: nnx.Rngs):
    conv = lambda cin, cout, k: nnx.Conv(
        cin, cout, (k, k), padding=((k // 2, k // 2),) * 2, kernel_init=kernel_init,
        dtype=dtype, rngs=rngs)
    self.dims = dims
    self.squeeze = conv(dims.in_channels, dims.s1x1, 1)
    self.expand1x1 = conv(dims.s1x1, dims.e1x1, 1) if dims.e1x1 else None
    self.expand3x3 = conv(dims.s1x1, dims.e3x3, 3) if dims.e3x3 else None
    self.bypass_conv = (conv(dims.in_channels, dims.out_channels, 1)
                        if dims.bypass == 'complex' else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    s = nnx.relu(pointwise(self.squeeze, x))
    branches = []
    if self.expand1x1 is not None:
      branches.append(nnx.relu(pointwise(self.expand1x1, s)))
    if self.expand3x3 is not None:
      branches.append(nnx.relu(self.expand3x3(s)))
    y = branches[0] if len(branches) == 1 else jnp.concatenate(branches, axis=-1)
    if self.dims.bypass == 'simple':
      y = y + x
    elif self.dims.bypass == 'complex':
      y = y + nnx.relu(pointwise(self.bypass_conv, x))
    return y


class SqueezeNet(nnx.Module):
  """conv1 -> pool -> fire2..fire9 (pools per layout) -> dropout -> conv10 -> avg pool."""

  def __init__(self, spec: spec_lib.SqueezeNetSpec, *, dtype=None, rngs: nnx.Rngs):
    self.spec = spec
    kernel_init = _kernel_init(spec.init)
    c1 = spec.conv1
    self.conv1 = nnx.Conv(
        spec.in_channels, c1.filters, (c1.kernel, c1.kernel), strides=c1.stride,
        padding=((c1.padding, c1.padding),) * 2, kernel_init=kernel_init,
        dtype=dtype, rngs=rngs)
    self.fires = nnx.List([
        FireModule(dims, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        for dims in spec.fires()])
    # conv10 starts at N(0, 0.01) in both Caffe and torchvision.
    self.conv10 = nnx.Conv(
        spec.fires()[-1].out_channels, spec.num_classes, (1, 1), padding='VALID',
        kernel_init=nnx.initializers.normal(0.01), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits (float32) for NHWC images; dropout is active only given a key."""
    # pool(relu(conv1(x) + bias)) == relu(pool(conv1(x)) + bias) exactly (max
    # commutes with a per-channel constant and with ReLU; rounding is monotone).
    # Pooling first does the bias, the ReLU and their gradients on a 4x smaller
    # tensor: conv1's output is the largest activation of the network.
    x = max_pool_ceil(conv_without_bias(self.conv1, x))
    x = nnx.relu(x + self.conv1.bias[...].astype(x.dtype))
    for i, fire in enumerate(self.fires):
      x = fire(x)
      if i in self.spec.pool_after:
        x = max_pool_ceil(x)
    x = dropout(x, self.spec.dropout_rate, dropout_key)
    x = pointwise(self.conv10, x)
    if self.spec.conv10_relu:
      x = nnx.relu(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def create(spec: spec_lib.SqueezeNetSpec, *, seed: int = 0, dtype=None) -> SqueezeNet:
  return SqueezeNet(spec, dtype=dtype, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
