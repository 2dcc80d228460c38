"""AlexNet as a Flax NNX module, built from an `AlexNetSpec` (see squeezejax.spec_alexnet).

conv1..conv5 (ReLU; LRN and 3x3/2 max pools where the layout has them) -> [adaptive
6x6 average pool, torchvision] -> flatten (NHWC order) -> fc6, fc7 (ReLU, dropout)
-> fc8. Dropout sits where each original has it: Caffe drops fc6's and fc7's
outputs, torchvision drops fc6's and fc7's inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import initializers, layers
from squeezejax import spec_alexnet as spec_lib

# Caffe's bvlc_alexnet fillers: Gaussian weights, constant biases.
CAFFE_WEIGHT_STD = {'fc6': 0.005, 'fc7': 0.005}  # 0.01 elsewhere
CAFFE_BIAS = {'conv2': 0.1, 'conv4': 0.1, 'conv5': 0.1, 'fc6': 0.1, 'fc7': 0.1}  # 0 elsewhere
# PyTorch's default weights: U(+-1/sqrt(fan_in)) (kaiming_uniform_ with a=sqrt(5)).
TORCH_WEIGHTS = initializers.uniform_fan_in(1 / 3)


def lrn(x: jax.Array, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
        k: float = 1.0) -> jax.Array:
  """Caffe's (and torch.nn.LocalResponseNorm's) cross-channel LRN:
  x / (k + alpha / n * sum of x^2 over n channels centred on each)^beta."""
  sq = jnp.square(x.astype(jnp.float32))
  half = local_size // 2
  window = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, 1, 1, local_size), (1, 1, 1, 1),
                                 ((0, 0), (0, 0), (0, 0), (half, local_size - 1 - half)))
  return (x / (k + alpha / local_size * window) ** beta).astype(x.dtype)


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """torch.nn.AdaptiveAvgPool2d: bin i covers [floor(i H / s), ceil((i + 1) H / s))."""
  h, w = x.shape[1:3]
  if (h, w) == (size, size):
    return x
  rows = [jnp.mean(x[:, (i * h) // size:math.ceil((i + 1) * h / size)], axis=1, keepdims=True)
          for i in range(size)]
  x = jnp.concatenate(rows, axis=1)
  cols = [jnp.mean(x[:, :, (j * w) // size:math.ceil((j + 1) * w / size)], axis=2,
                   keepdims=True) for j in range(size)]
  return jnp.concatenate(cols, axis=2)


def floor_max_pool(x: jax.Array, formulation: str = 'cpu') -> jax.Array:
  """torchvision's 3x3/2 max pool, which rounds its output size down."""
  h, w = x.shape[1:3]
  return layers.max_pool(x[:, :(h - 3) // 2 * 2 + 3, :(w - 3) // 2 * 2 + 3],
                         formulation=formulation)


class AlexNet(nnx.Module):

  def __init__(self, spec: spec_lib.AlexNetSpec, *, dtype=None, formulation: str = 'auto',
               rngs: nnx.Rngs):
    self.spec = spec
    self.formulation = formulation = layers.resolve(formulation)  # squeezejax.layers
    caffe = spec.init == 'caffe'

    def inits(name):
      if caffe:
        return dict(kernel_init=initializers.normal(CAFFE_WEIGHT_STD.get(name, 0.01)),
                    bias_init=nnx.initializers.constant(CAFFE_BIAS.get(name, 0.0)))
      return dict(kernel_init=TORCH_WEIGHTS, bias_init=nnx.initializers.zeros_init())

    self.convs = nnx.List([
        layers.Conv(c.in_channels, c.filters, (c.kernel, c.kernel), strides=c.stride,
                    padding=((c.padding, c.padding),) * 2, feature_group_count=c.groups,
                    dtype=dtype, formulation=formulation, rngs=rngs, **inits(c.name))
        for c in spec.convs()])
    fan_in = spec.fc_in_features()
    self.fc6 = nnx.Linear(fan_in, spec.fc_width, dtype=dtype, rngs=rngs, **inits('fc6'))
    self.fc7 = nnx.Linear(spec.fc_width, spec.fc_width, dtype=dtype, rngs=rngs, **inits('fc7'))
    self.fc8 = nnx.Linear(spec.fc_width, spec.num_classes, dtype=dtype, rngs=rngs,
                          **inits('fc8'))

  def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None,
               train: bool = False, return_features: bool = False):
    """Logits (float32) for NHWC images; dropout is active only given a key."""
    del train  # no BatchNorm
    spec, features = self.spec, {}
    pool = floor_max_pool if spec.layout == 'torchvision' else layers.max_pool
    for conv, dims in zip(self.convs, spec.convs()):
      x = nnx.relu(conv(x))
      if dims.lrn:
        x = lrn(x, **spec_lib.LRN)
      if dims.pool:
        x = pool(x, formulation=self.formulation)
      features[dims.name] = x
    if spec.pooled_size:
      x = adaptive_avg_pool(x, spec.pooled_size)
    x = x.reshape(x.shape[0], -1)
    keys = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    drop = lambda y, i: layers.dropout(y, spec.dropout_rate, keys[i])
    if spec.layout == 'torchvision':
      x = nnx.relu(self.fc6(drop(x, 0)))
      x = nnx.relu(self.fc7(drop(x, 1)))
    else:
      x = drop(nnx.relu(self.fc6(x)), 0)
      x = drop(nnx.relu(self.fc7(x)), 1)
    logits = self.fc8(x).astype(jnp.float32)
    return (logits, features) if return_features else logits
