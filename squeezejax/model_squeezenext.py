"""SqueezeNeXt as Flax NNX modules, built from a `SqueezeNeXtSpec` (Gholami et al. 2018).

Every conv is conv -> BatchNorm -> ReLU; a unit adds its shortcut (identity or
projection) to its expand output, then applies ReLU. Conv weights start as
pytorchcv's (kaiming_uniform_, biases 0); the classifier as PyTorch's Linear.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import initializers, layers
from squeezejax import model as model_lib
from squeezejax import spec_squeezenext as spec_lib

KERNEL_INIT = initializers.he_uniform()
TORCH_LINEAR = initializers.uniform_fan_in(1 / 3)


class ConvBN(nnx.Module):
  """conv -> BatchNorm -> ReLU."""

  def __init__(self, dims: spec_lib.ConvDims, bias: bool, padding=None, *, dtype=None,
               formulation: str = 'cpu', rngs: nnx.Rngs):
    kh, kw = dims.kernel
    # layers.Conv's 1x1 matmul path has no groups: grouped convs take nnx.Conv.
    conv = (functools.partial(layers.Conv, formulation=formulation) if dims.groups == 1
            else nnx.Conv)
    self.conv = conv(dims.in_channels, dims.out_channels, dims.kernel, strides=dims.stride,
                     padding=padding or ((kh // 2, kh // 2), (kw // 2, kw // 2)),
                     feature_group_count=dims.groups, use_bias=bias, kernel_init=KERNEL_INIT,
                     dtype=dtype, rngs=rngs)
    self.bn = model_lib.batch_norm(dims.out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return model_lib.conv_bn_relu(self.conv, self.bn, x, train)


class Unit(nnx.Module):
  """squeeze1 -> squeeze2 -> conv1x3 -> conv3x1 -> expand, + shortcut, -> ReLU."""

  def __init__(self, dims: spec_lib.UnitDims, bias: bool, *, dtype=None,
               formulation: str = 'cpu', rngs: nnx.Rngs):
    conv_bn = functools.partial(ConvBN, dtype=dtype, formulation=formulation, rngs=rngs)
    self.convs = nnx.List([conv_bn(c, bias) for c in dims.convs])
    self.projection = conv_bn(dims.projection, bias) if dims.projection else None

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    shortcut = x if self.projection is None else self.projection(x, train)
    for conv in self.convs:
      x = conv(x, train)
    return nnx.relu(x + shortcut)


class SqueezeNeXt(nnx.Module):
  """stem -> [max pool] -> stage1..stageN -> head 1x1 -> global average pool -> fc."""

  def __init__(self, spec: spec_lib.SqueezeNeXtSpec, *, dtype=None, formulation: str = 'auto',
               rngs: nnx.Rngs):
    self.spec = spec
    self.formulation = formulation = layers.resolve(formulation)  # squeezejax.layers
    k = spec.stem_kernel
    p = spec.stem_padding
    self.stem = ConvBN(spec_lib.ConvDims('stem', spec.in_channels,
                                         spec.scaled(spec.stem_channels), (k, k),
                                         spec.stem_stride), spec.bias, ((p, p), (p, p)),
                       dtype=dtype, formulation=formulation, rngs=rngs)
    self.units = nnx.List([Unit(u, spec.bias, dtype=dtype, formulation=formulation, rngs=rngs)
                           for u in spec.units()])
    c = spec.units()[-1].out_channels
    head = spec_lib.ConvDims('head', c, spec.scaled(spec.head_channels), (1, 1))
    self.head_conv = ConvBN(head, spec.bias, dtype=dtype, formulation=formulation, rngs=rngs)
    self.fc = nnx.Linear(head.out_channels, spec.num_classes, use_bias=spec.bias,
                         kernel_init=TORCH_LINEAR, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None,
               train: bool = False, return_features: bool = False):
    """Logits (float32) for NHWC images (SqueezeNeXt has no dropout)."""
    del dropout_key
    x = self.stem(x, train)
    features = {'stem': x}
    if self.spec.stem_pool:
      x = layers.max_pool(x, formulation=self.formulation)
    for unit, dims in zip(self.units, self.spec.units()):
      x = unit(x, train)
      features[dims.name.split('_')[0]] = x  # the last unit's output names the stage
    x = self.head_conv(x, train)
    features['head'] = x
    logits = self.fc(jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype))
    logits = logits.astype(jnp.float32)
    return (logits, features) if return_features else logits
