"""SqueezeNet as Flax NNX modules, built from a `SqueezeNetSpec` (Iandola et al. 2016).

Inputs are NHWC. Every channel count comes from the spec. Parameters are float32;
`dtype` sets the compute dtype (e.g. jnp.bfloat16 on accelerators). Dropout takes
an explicit key, so the training step stays a pure function of pytrees. The
layers (`squeezejax.layers`) come in an XLA:CPU and a textbook formulation that
compute the same function.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import layers
from squeezejax import spec as spec_lib

INITIALIZERS = {
    'caffe': nnx.initializers.lecun_uniform(),  # Caffe's "xavier": U(+-sqrt(3 / fan_in))
    'torchvision': nnx.initializers.he_uniform(),  # kaiming_uniform_(a=0)
}


class FireModule(nnx.Module):
  """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat (1x1 first).

  An expand branch with zero filters (pct_3x3 of 0 or 1) is not built. The bypass
  of `dims.bypass` is applied here: 'simple' adds the input, 'complex' adds a 1x1
  conv (+ ReLU, as in the authors' generator) of the input; no ReLU after the add.
  """

  def __init__(self, dims: spec_lib.FireDims, *, kernel_init, dtype=None,
               formulation: str = 'cpu', rngs: nnx.Rngs):
    conv = lambda cin, cout, k: layers.Conv(
        cin, cout, (k, k), padding=((k // 2, k // 2),) * 2, kernel_init=kernel_init,
        dtype=dtype, formulation=formulation, rngs=rngs)
    self.dims = dims
    self.squeeze = conv(dims.in_channels, dims.s1x1, 1)
    self.expand1x1 = conv(dims.s1x1, dims.e1x1, 1) if dims.e1x1 else None
    self.expand3x3 = conv(dims.s1x1, dims.e3x3, 3) if dims.e3x3 else None
    self.bypass_conv = (conv(dims.in_channels, dims.out_channels, 1)
                        if dims.bypass == 'complex' else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    s = nnx.relu(self.squeeze(x))
    expands = [nnx.relu(e(s)) for e in (self.expand1x1, self.expand3x3) if e is not None]
    y = expands[0] if len(expands) == 1 else jnp.concatenate(expands, axis=-1)
    if self.dims.bypass == 'simple':
      y = y + x
    elif self.dims.bypass == 'complex':
      y = y + nnx.relu(self.bypass_conv(x))
    return y


class SqueezeNet(nnx.Module):
  """conv1 -> pool -> fire2..fire9 (pools per layout) -> dropout -> conv10 -> avg pool."""

  def __init__(self, spec: spec_lib.SqueezeNetSpec, *, dtype=None, formulation: str = 'auto',
               rngs: nnx.Rngs):
    self.spec = spec
    self.formulation = formulation = layers.resolve(formulation)  # squeezejax.layers
    kernel_init = INITIALIZERS[spec.init]
    c1 = spec.conv1
    self.conv1 = layers.Conv(
        spec.in_channels, c1.filters, (c1.kernel, c1.kernel), strides=c1.stride,
        padding=((c1.padding, c1.padding),) * 2, kernel_init=kernel_init,
        dtype=dtype, formulation=formulation, rngs=rngs)
    self.fires = nnx.List([FireModule(dims, kernel_init=kernel_init, dtype=dtype,
                                      formulation=formulation, rngs=rngs)
                           for dims in spec.fires()])
    # conv10 starts at N(0, 0.01) in both Caffe and torchvision.
    self.conv10 = layers.Conv(
        spec.fires()[-1].out_channels, spec.num_classes, (1, 1), padding='VALID',
        kernel_init=nnx.initializers.normal(0.01), dtype=dtype, formulation=formulation,
        rngs=rngs)

  def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits (float32) for NHWC images; dropout is active only given a key."""
    x = layers.pooled_conv(self.conv1, x, nnx.relu)  # conv1 -> ReLU -> maxpool1
    for i, fire in enumerate(self.fires):
      x = fire(x)
      if i in self.spec.pool_after:
        x = layers.max_pool(x, formulation=self.formulation)
    x = layers.dropout(x, self.spec.dropout_rate, dropout_key)
    if self.spec.conv10_pad:  # Caffe v1.0: the border is relu(bias) in the average
      p = self.spec.conv10_pad
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    x = self.conv10(x)
    if self.spec.conv10_relu:
      x = nnx.relu(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def create(spec: spec_lib.SqueezeNetSpec, *, seed: int = 0, dtype=None,
           formulation: str = 'auto') -> SqueezeNet:
  """`formulation`: the layers' ('auto' | 'textbook' | 'cpu', squeezejax.layers)."""
  return SqueezeNet(spec, dtype=dtype, formulation=formulation, rngs=nnx.Rngs(seed))


def abstract_params(spec: spec_lib.SqueezeNetSpec):
  """The parameter pytree's shapes and dtypes (a pure dict), built without allocating it."""
  return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(create(spec), nnx.Param)))


def from_params(spec: spec_lib.SqueezeNetSpec, params) -> SqueezeNet:
  """A SqueezeNet module holding `params` (a pure dict), without a random init."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: create(spec)))
  state = jax.tree.map(lambda x: x, state)  # a copy we may fill in
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, dict(params)))
  return nnx.merge(graphdef, state)
