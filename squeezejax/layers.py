"""The layers SqueezeNet is built from, in two formulations of the same function.

  'cpu'       written the way XLA:CPU runs them fastest (below);
  'textbook'  `lax.conv_general_dilated` and `lax.reduce_window`, as on GPU and TPU
              until the 'cpu' one is measured faster there.

`config.layers` picks one ('auto': `resolve`); both give the same logits and
gradients (tests/test_model.py, tests/test_accelerator.py) and the same
parameters, so a checkpoint loads into either. docs/performance.md has the CPU
profiles behind each choice of the 'cpu' formulation:

  Conv           `nnx.Conv`; a 1x1, stride-1 convolution runs as a matmul over
                 channels (XLA:CPU's matmul and its two gradient matmuls beat the
                 convolution; on GPU and TPU both lower to the same GEMM).
  max_pool       3x3/2 max pool that rounds its output size up (Caffe, torchvision
                 ceil_mode), as a maximum of strided slices: the gradient is a few
                 fused elementwise ops instead of select-and-scatter.
  pooled_conv    pool(activation(conv(x))) with the pool taken first where that is
                 exact, so the bias, activation and their gradients run on a 4x
                 smaller tensor (conv1's output is the network's largest).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import configs, onednn, spec as spec_lib
from squeezejax.errors import UserError

FORMULATIONS = configs.LAYERS


def resolve(formulation: str, backend: str | None = None) -> str:
  """'auto' is 'cpu' on XLA:CPU and 'textbook' elsewhere (not yet measured there)."""
  if formulation not in FORMULATIONS:
    raise UserError(f'layers={formulation!r} is not allowed: expected one of '
                    f'{", ".join(FORMULATIONS)}')
  if formulation != 'auto':
    return formulation
  return 'cpu' if (backend or jax.default_backend()) == 'cpu' else 'textbook'

# max(f(a + b), f(c + b)) == f(max(a, c) + b) for a per-channel constant b exactly
# when f is non-decreasing (float rounding is monotone too). Other activations
# take the textbook order.
NON_DECREASING = (nnx.relu, jax.nn.relu, jax.nn.relu6, jax.nn.leaky_relu, jax.nn.elu,
                  jax.nn.sigmoid, jnp.tanh, jax.nn.hard_tanh)


class Conv(nnx.Conv):
  """`nnx.Conv` (NHWC, HWIO kernel, symmetric integer padding) in a formulation."""

  def __init__(self, *args, formulation: str = 'cpu', **kwargs):
    super().__init__(*args, **kwargs)
    self.formulation = resolve(formulation)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self._onednn(x):
      return self._convolve(x, add_bias=True)
    if (self.formulation == 'cpu' and self.kernel_size == (1, 1)
        and self.strides in (1, (1, 1))):
      bias = self.bias[...] if self.bias is not None else None
      x, kernel, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
      y = jnp.einsum('...c,co->...o', x, kernel[0, 0], precision=self.precision)
      return y if bias is None else y + bias
    return super().__call__(x)

  def without_bias(self, x: jax.Array) -> jax.Array:
    return self._convolve(x, add_bias=False)

  def _convolve(self, x: jax.Array, add_bias: bool) -> jax.Array:
    """The convolution, plus the bias with `add_bias` (inside oneDNN's when it runs it)."""
    x, kernel = self.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
    bias = self.bias[...].astype(x.dtype) if add_bias and self.bias is not None else None
    if self._onednn(x):
      return onednn.conv(x, kernel, self._strides(), self.padding, bias)
    y = jax.lax.conv_general_dilated(
        x, kernel, self._strides(), tuple(map(tuple, self.padding)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=self.precision)
    return y if bias is None else y + bias

  def _strides(self) -> tuple[int, int]:
    return tuple(self.strides) if isinstance(self.strides, (tuple, list)) else (self.strides,) * 2

  def _onednn(self, x: jax.Array) -> bool:
    """Traced inside onednn.enabled() (cpu_convolutions='onednn') in a form it takes:
    then every convolution, 1x1 ones too, goes to oneDNN (docs/performance.md)."""
    return onednn.supports(self.dtype or jnp.result_type(x, self.kernel[...]), self.padding,
                           self.feature_group_count, self.kernel_dilation, self.input_dilation)


@jax.custom_jvp
def _max_first(a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.maximum whose gradient goes to `a` on ties (jnp.maximum splits it in half)."""
  return jnp.maximum(a, b)


@_max_first.defjvp
def _max_first_jvp(primals, tangents):
  (a, b), (da, db) = primals, tangents
  # One compare and a select; jnp.maximum's tie-splitting costs two compares,
  # selects and a division per element in the backward pass.
  return jnp.maximum(a, b), jnp.where(a >= b, da, db)


def max_pool(x: jax.Array, kernel: int = 3, stride: int = 2, formulation: str = 'cpu'
             ) -> jax.Array:
  """Unpadded ceil-mode max pool; on exact ties the gradient goes to one element,
  as in Caffe and PyTorch."""
  h, w = x.shape[1:3]
  oh = spec_lib.pool_output_size(h, kernel, stride)
  ow = spec_lib.pool_output_size(w, kernel, stride)
  pad_h, pad_w = (oh - 1) * stride + kernel - h, (ow - 1) * stride + kernel - w
  if resolve(formulation) == 'textbook':
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, kernel, kernel, 1),
                                 (1, stride, stride, 1), ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  if x.dtype == jnp.bfloat16:  # XLA:CPU fuses bfloat16's gradient into far slower kernels
    return max_pool(x.astype(jnp.float32), kernel, stride, formulation).astype(x.dtype)
  x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
  rows = [x[:, i:i + (oh - 1) * stride + 1:stride] for i in range(kernel)]
  x = functools.reduce(_max_first, rows)
  cols = [x[:, :, j:j + (ow - 1) * stride + 1:stride] for j in range(kernel)]
  return functools.reduce(_max_first, cols)


def pooled_conv(conv: Conv, x: jax.Array, activation: Callable[[jax.Array], jax.Array]
                ) -> jax.Array:
  """max_pool(activation(conv(x)))."""
  if (conv.formulation == 'textbook' or activation not in NON_DECREASING
      or conv.bias is None):
    return max_pool(activation(conv(x)), formulation=conv.formulation)
  y = max_pool(conv.without_bias(x))
  return activation(y + conv.bias[...].astype(y.dtype))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout with an explicit key; the identity when key is None (evaluation)."""
  if key is None or rate == 0:
    return x
  keep = jax.random.bernoulli(key, 1 - rate, x.shape)
  return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)
