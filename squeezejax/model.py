"""SqueezeNet as Flax NNX modules (Iandola et al. 2016), and building any family's network.

Inputs are NHWC. Every channel count comes from the spec. Parameters are float32;
`dtype` sets the compute dtype (e.g. jnp.bfloat16 on accelerators). Dropout takes
an explicit key, so the training step stays a pure function of pytrees. The
layers (`squeezejax.layers`) come in an XLA:CPU and a textbook formulation that
compute the same function.

Every family's module is called as `net(x, *, dropout_key=None, train=False,
return_features=False)`: `train=True` normalises with batch statistics and
updates the BatchNorm running averages (nnx.BatchStat); otherwise the running
averages are used. `return_features=True` returns `(logits, {name: map})` with
the named intermediate maps, whose strides are `spec.feature_strides()`.

A network's weights, as stored and converted, are one pure dict of its
nnx.Param and nnx.BatchStat arrays (`weights`); the trainer keeps the two parts
apart (`split_weights`), since only the parameters have gradients.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
from flax import nnx

from squeezejax import initializers, layers
from squeezejax import spec as spec_lib

INITIALIZERS = {
    'caffe': initializers.lecun_uniform(),  # Caffe's "xavier": U(+-sqrt(3 / fan_in))
    'torchvision': initializers.he_uniform(),  # kaiming_uniform_(a=0)
}


def batch_norm(channels: int, *, dtype=None, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm with Caffe's and PyTorch's running-average momentum 0.1 and epsilon 1e-5.

  The variance is the mean of squared deviations, not E[x^2] - E[x]^2 (flax's fast
  default), whose cancellation made 1 and 8 devices' losses drift apart.
  """
  return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                       dtype=dtype, rngs=rngs)


def conv_bn_relu(conv, bn: nnx.BatchNorm | None, x: jax.Array, train: bool) -> jax.Array:
  """ReLU(BatchNorm(conv(x))), or ReLU(conv(x)) without a BatchNorm."""
  x = conv(x)
  return nnx.relu(x if bn is None else bn(x, use_running_average=not train))


class FireModule(nnx.Module):
  """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concat (1x1 first).

  An expand branch with zero filters (pct_3x3 of 0 or 1) is not built. The bypass
  of `dims.bypass` is applied here: 'simple' adds the input, 'complex' adds a 1x1
  conv (+ ReLU, as in the authors' generator) of the input; no ReLU after the add.
  """

  def __init__(self, dims: spec_lib.FireDims, *, kernel_init, dtype=None,
               formulation: str = 'cpu', rngs: nnx.Rngs):
    norm = dims.batch_norm
    conv = lambda cin, cout, k: layers.Conv(
        cin, cout, (k, k), padding=((k // 2, k // 2),) * 2, kernel_init=kernel_init,
        use_bias=not norm, dtype=dtype, formulation=formulation, rngs=rngs)
    bn = lambda c: batch_norm(c, dtype=dtype, rngs=rngs) if norm and c else None
    self.dims = dims
    self.squeeze = conv(dims.in_channels, dims.s1x1, 1)
    self.expand1x1 = conv(dims.s1x1, dims.e1x1, 1) if dims.e1x1 else None
    self.expand3x3 = conv(dims.s1x1, dims.e3x3, 3) if dims.e3x3 else None
    complex_ = dims.bypass == 'complex'
    self.bypass_conv = conv(dims.in_channels, dims.out_channels, 1) if complex_ else None
    # BatchNorms sit beside their convs, so the conv weights keep their names.
    self.squeeze_bn, self.expand1x1_bn, self.expand3x3_bn = (
        bn(dims.s1x1), bn(dims.e1x1), bn(dims.e3x3))
    self.bypass_bn = bn(dims.out_channels) if complex_ else None

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    s = conv_bn_relu(self.squeeze, self.squeeze_bn, x, train)
    expands = [conv_bn_relu(e, bn, s, train) for e, bn in (
        (self.expand1x1, self.expand1x1_bn), (self.expand3x3, self.expand3x3_bn))
               if e is not None]
    y = expands[0] if len(expands) == 1 else jnp.concatenate(expands, axis=-1)
    if self.dims.bypass == 'simple':
      y = y + x
    elif self.dims.bypass == 'complex':
      y = y + conv_bn_relu(self.bypass_conv, self.bypass_bn, x, train)
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
        use_bias=not spec.batch_norm, dtype=dtype, formulation=formulation, rngs=rngs)
    self.bn1 = batch_norm(c1.filters, dtype=dtype, rngs=rngs) if spec.batch_norm else None
    self.fires = nnx.List([FireModule(dims, kernel_init=kernel_init, dtype=dtype,
                                      formulation=formulation, rngs=rngs)
                           for dims in spec.fires()])
    # conv10 starts at N(0, 0.01) in both Caffe and torchvision.
    self.conv10 = layers.Conv(
        spec.fires()[-1].out_channels, spec.num_classes, (1, 1), padding='VALID',
        kernel_init=initializers.normal(0.01), dtype=dtype, formulation=formulation,
        rngs=rngs)

  def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None,
               train: bool = False, return_features: bool = False):
    """Logits (float32) for NHWC images; dropout is active only given a key."""
    features = {}
    if self.bn1 is None:
      x = layers.pooled_conv(self.conv1, x, nnx.relu)  # conv1 -> ReLU -> maxpool1
    else:
      x = layers.max_pool(nnx.relu(self.bn1(self.conv1(x), use_running_average=not train)),
                          formulation=self.formulation)
    features['conv1'] = x
    for i, fire in enumerate(self.fires):
      x = fire(x, train)
      features[fire.dims.name] = x
      if i in self.spec.pool_after:
        x = layers.max_pool(x, formulation=self.formulation)
    x = layers.dropout(x, self.spec.dropout_rate, dropout_key)
    if self.spec.conv10_pad:  # Caffe v1.0: the border is relu(bias) in the average
      p = self.spec.conv10_pad
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    x = self.conv10(x)
    if self.spec.conv10_relu:
      x = nnx.relu(x)
    features['conv10'] = x
    logits = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return (logits, features) if return_features else logits


# -- any family -----------------------------------------------------------------------


def module_class(spec) -> type:
  """The NNX module class of a spec's family (see squeezejax.families)."""
  from squeezejax import families  # pylint: disable=g-import-not-at-top
  path, _, name = families.FAMILIES[spec.family].module.partition(':')
  return getattr(importlib.import_module(path), name)


def create(spec, *, seed: int = 0, dtype=None, formulation: str = 'auto') -> nnx.Module:
  """A freshly initialised network of any family; `formulation`: its layers'
  ('auto' | 'textbook' | 'cpu', squeezejax.layers)."""
  rngs = nnx.Rngs(seed)
  return initializers.drawn_together(lambda: module_class(spec)(
      spec, dtype=dtype, formulation=formulation, rngs=rngs), rngs)


def features(net: nnx.Module, x: jax.Array) -> dict[str, tuple[jax.Array, int]]:
  """{name: (feature map, stride)} of a network's named intermediate maps (evaluation mode)."""
  _, maps = net(x, return_features=True)
  strides = net.spec.feature_strides()
  return {name: (m, strides[name]) for name, m in maps.items()}


def weights(net: nnx.Module) -> dict:
  """All of a network's arrays (parameters and BatchNorm statistics) as one pure dict."""
  return merge_weights(*split_weights(net))


def split_weights(net_or_weights, spec=None) -> tuple[dict, dict]:
  """(params, batch_stats) pure dicts of a network (or of `weights` of `spec`'s network)."""
  net = net_or_weights if spec is None else from_params(spec, net_or_weights)
  return (nnx.to_pure_dict(nnx.state(net, nnx.Param)),
          nnx.to_pure_dict(nnx.state(net, nnx.BatchStat)))


def merge_weights(params: dict, batch_stats: dict) -> dict:
  """The inverse of `split_weights`: one nested dict holding both."""
  if not batch_stats:
    return params
  out = dict(params)
  for key, value in batch_stats.items():
    out[key] = merge_weights(out[key], value) if key in out else value
  return out


def abstract_params(spec):
  """The parameter pytree's shapes and dtypes (a pure dict), built without allocating it."""
  return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(create(spec), nnx.Param)))


def abstract_batch_stats(spec):
  """The BatchNorm statistics' shapes and dtypes ({} for a network without BatchNorm)."""
  return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(create(spec), nnx.BatchStat)))


def abstract_weights(spec):
  return merge_weights(abstract_params(spec), abstract_batch_stats(spec))


def from_params(spec, params) -> nnx.Module:
  """A network holding `params` (a pure dict of its weights), without a random init."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: create(spec)))
  state = jax.tree.map(lambda x: x, state)  # a copy we may fill in
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, dict(params)))
  return nnx.merge(graphdef, state)
