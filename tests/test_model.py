"""The layers' fast CPU formulation equals the textbook one (lax.conv, reduce_window).

`squeezejax.layers` writes 1x1 convolutions as matmuls and the ceil-mode max
pool as a maximum of strided slices, for speed (docs/performance.md). Here a
plain reference built from `lax.conv_general_dilated` and `lax.reduce_window`
on the same parameters must give the same logits and the same gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import layers
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib


def reference_pool(x):
  h, w = x.shape[1:3]
  oh, ow = spec_lib.pool_output_size(h), spec_lib.pool_output_size(w)
  pad = ((0, 0), (0, (oh - 1) * 2 + 3 - h), (0, (ow - 1) * 2 + 3 - w), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pad)


def reference_conv(p, x, stride=1, padding=None):
  k = p['kernel']
  pad = k.shape[0] // 2 if padding is None else padding
  y = jax.lax.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y + p['bias']


def reference_forward(spec, params, x):
  """SqueezeNet written the obvious way, from the spec and the parameter dict."""
  relu = jax.nn.relu
  c1 = spec.conv1
  x = reference_pool(relu(reference_conv(params['conv1'], x, c1.stride, c1.padding)))
  for i, dims in enumerate(spec.fires()):
    p = params['fires'][i]
    s = relu(reference_conv(p['squeeze'], x))
    branches = [relu(reference_conv(p[name], s)) for name, width in
                (('expand1x1', dims.e1x1), ('expand3x3', dims.e3x3)) if width]
    y = jnp.concatenate(branches, -1)
    if dims.bypass == 'simple':
      y = y + x
    elif dims.bypass == 'complex':
      y = y + relu(reference_conv(p['bypass_conv'], x))
    x = reference_pool(y) if i in spec.pool_after else y
  x = reference_conv(params['conv10'], x)
  if spec.conv10_relu:
    x = relu(x)
  return x.mean(axis=(1, 2))


CASES = [
    ('small complex', dict(layout='small', bypass='complex'), 19),  # odd: ceil pools pad
    # conv1 7x7/2, pooled simple bypasses, no expand1x1 branch, no ReLU head.
    ('v1.0 simple pct_3x3=1', dict(layout='v1.0', bypass='simple', pct_3x3=1.0,
                                   conv10_relu=False), 51),
]


@pytest.mark.parametrize('name,fields,image_size', CASES, ids=[c[0] for c in CASES])
def test_fast_model_equals_reference(name, fields, image_size):
  spec = spec_lib.SqueezeNetSpec(base_e=16, incr_e=16, num_classes=7, init='torchvision',
                                 **fields)
  model = model_lib.create(spec, seed=1)
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  x = jax.random.normal(jax.random.key(0), (2, image_size, image_size, 3))
  labels = jnp.array([1, 5])

  def loss(forward, p):
    logits = forward(p)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), logits

  fast = lambda p: nnx.merge(graphdef, p)(x)
  slow = lambda p: reference_forward(spec, p, x)
  both = jax.jit(lambda p: [jax.value_and_grad(lambda q: loss(f, q), has_aux=True)(p)
                             for f in (fast, slow)])  # one compilation for both
  ((fast_loss, fast_logits), fast_grads), ((slow_loss, slow_logits), slow_grads) = both(params)

  np.testing.assert_allclose(fast_logits, slow_logits, rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(fast_logits)).max() > 0  # not a dead network
  np.testing.assert_allclose(fast_loss, slow_loss, rtol=1e-6)
  flat_fast = jax.tree.leaves_with_path(fast_grads)
  flat_slow = dict(jax.tree.leaves_with_path(slow_grads))
  assert len(flat_fast) == len(flat_slow)
  for path, g in flat_fast:
    ref = flat_slow[path]
    scale = float(np.abs(np.asarray(ref)).max()) + 1e-12
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_pool_matches_reduce_window_including_ceil_edges():
  x = jax.random.normal(jax.random.key(3), (2, 10, 7, 4))
  np.testing.assert_array_equal(layers.max_pool(x), reference_pool(x))
  # Gradients agree where the window maximum is unique (random data: always).
  g = jax.grad(lambda v: (layers.max_pool(v) ** 2).sum())(x)
  g_ref = jax.grad(lambda v: (reference_pool(v) ** 2).sum())(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  spec = spec_lib.SqueezeNetSpec(layout='small', base_e=16, incr_e=16, num_classes=3)
  graphdef, params = nnx.split(model_lib.create(spec, dtype=jnp.bfloat16))
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype('float32')}
  logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, jnp.ones((1, 16, 16, 3)))
  assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize('activation', [jax.nn.relu, jax.nn.gelu, jax.nn.silu, jnp.abs],
                         ids=['relu', 'gelu', 'silu', 'abs'])
def test_pooled_conv_is_pool_of_activation_for_any_activation(activation):
  """Pooling before the bias and activation is exact only for non-decreasing
  activations; a fork that swaps in GELU (or |x|) must still get pool(f(conv(x)))."""
  conv = layers.Conv(3, 8, (3, 3), strides=2, padding=((0, 0), (0, 0)), rngs=nnx.Rngs(0))
  conv.bias[...] = jax.random.normal(jax.random.key(1), (8,))
  x = jax.random.normal(jax.random.key(2), (2, 21, 21, 3))
  expected = reference_pool(activation(nnx.Conv.__call__(conv, x)))
  np.testing.assert_allclose(layers.pooled_conv(conv, x, activation), expected, rtol=1e-6,
                             atol=1e-6)


def test_pointwise_conv_equals_the_convolution():
  conv = layers.Conv(5, 7, (1, 1), padding='VALID', rngs=nnx.Rngs(0))
  conv.bias[...] = jnp.arange(7.0)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 5))
  np.testing.assert_allclose(conv(x), nnx.Conv.__call__(conv, x), rtol=1e-5, atol=1e-6)
