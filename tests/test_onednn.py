"""cpu_convolutions='onednn': oneDNN's convolutions as XLA custom calls (squeezejax.onednn)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import configs, layers, onednn, parallel
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

pytestmark = pytest.mark.skipif(not onednn.installed(), reason='oneDNN wheels not installed')

# (batch, size, in, out, kernel, stride, padding): conv1's stride 2 that drops a row,
# SqueezeNeXt's 1x3 / 3x1 with one-sided padding, fire 1x1 and 3x3, a VALID head.
GEOMETRIES = [
    (8, 17, 3, 8, (3, 3), 2, ((0, 0), (0, 0))),
    (8, 12, 5, 6, (7, 7), 2, ((1, 2), (1, 2))),
    (16, 9, 6, 10, (1, 3), 1, ((0, 0), (1, 1))),
    (8, 9, 6, 10, (3, 1), 1, ((1, 1), (0, 0))),
    (8, 7, 16, 32, (1, 1), 1, 'VALID'),
    (8, 7, 16, 32, (3, 3), 1, ((1, 1), (1, 1))),
]


@pytest.mark.parametrize('with_bias', [True, False], ids=['bias', 'no_bias'])
@pytest.mark.parametrize('geometry', GEOMETRIES, ids=str)
def test_convolution_and_its_gradients_match_xla_on_a_sharded_batch(geometry, with_bias):
  n, size, cin, cout, kernel_size, stride, padding = geometry
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, size, size, cin)).astype(np.float32)
  kernel = rng.standard_normal((*kernel_size, cin, cout)).astype(np.float32)
  bias = rng.standard_normal(cout).astype(np.float32)
  cotangent_seed = rng.standard_normal()

  def loss(x, kernel, bias):
    bias = bias if with_bias else None
    if onednn.is_enabled():
      y = onednn.conv(x, kernel, (stride, stride), padding, bias)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      y = y if bias is None else y + bias
    return jnp.sum(jnp.sin(y + cotangent_seed)), y

  mesh = parallel.make_mesh()  # 8 devices: each convolves its own shard of the batch
  shardings = (parallel.batch_sharding(mesh), parallel.replicated(mesh),
               parallel.replicated(mesh))
  grad = lambda: jax.value_and_grad(loss, (0, 1, 2), has_aux=True)
  reference = jax.jit(grad(), in_shardings=shardings)
  custom = parallel.jit(grad(), 'onednn', in_shardings=shardings)
  with jax.set_mesh(mesh):
    text = custom.lower(x, kernel, bias).as_text()
    (_, want), want_grads = reference(x, kernel, bias)
    (_, got), got_grads = custom(x, kernel, bias)
  forward = 'forward_bias' if with_bias else 'forward'
  for target in (forward, 'backward_data', 'backward_weights'):
    assert f'@squeezejax_conv_{target}(' in text
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
  if not with_bias:
    np.testing.assert_array_equal(got_grads[2], 0)


def loss_and_gradients(model, convs: str, seed: int):
  """(lowered text, [loss, *parameter gradients]) of `model`'s cross-entropy on a random
  batch of 16, jitted with `convs` over every device's shard of the batch."""
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, 16)
  loss = lambda p, x: -jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, p)(x))[
      jnp.arange(16), labels])
  mesh = parallel.make_mesh()
  fn = parallel.jit(jax.value_and_grad(loss), convs,
                    in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))
  with jax.set_mesh(mesh):
    return fn.lower(params, images).as_text(), jax.tree.leaves(fn(params, images))


def test_a_network_trains_the_same_with_onednn_as_with_eigen():
  """Same network, same batch: loss and every parameter gradient, under a mesh."""
  model = model_lib.create(spec_lib.preset('squeezenet_small', base_e=16, incr_e=16))
  outputs, texts = {}, {}
  for name in ('eigen', 'onednn'):
    texts[name], outputs[name] = loss_and_gradients(model, name, seed=1)
  convs = sum(isinstance(m, layers.Conv) for _, m in nnx.iter_graph(model))
  # One forward custom call per convolution; a bias is added in it, except where the
  # layer adds it after the max pool (pooled_conv).
  assert texts['onednn'].count('@squeezejax_conv_forward') == convs
  assert texts['onednn'].count('@squeezejax_conv_forward_bias(') == convs - 1
  assert 'squeezejax_conv' not in texts['eigen']
  for a, b in zip(outputs['onednn'], outputs['eigen']):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)


def test_bfloat16_runs_in_onednn_where_the_cpu_computes_it_as_close_to_float32_as_xla():
  """A network computing in bfloat16 (float32 parameters): its convolutions are oneDNN's
  where the CPU has AVX512-BF16 or AMX, else XLA's; its loss and gradients are as close
  to the float32 network's as with XLA's own bfloat16 convolutions (Eigen's)."""
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16)
  outputs, texts = {}, {}
  for convs, dtype in (('eigen', jnp.float32), ('eigen', jnp.bfloat16),
                       ('onednn', jnp.bfloat16)):
    texts[convs, dtype], outputs[convs, dtype] = loss_and_gradients(
        model_lib.create(spec, dtype=dtype), convs, seed=2)
  native = 'bfloat16' in parallel.onednn_dtypes()
  assert ('@squeezejax_conv_forward_bias(' in texts['onednn', jnp.bfloat16]) == native
  reference = outputs['eigen', jnp.float32]
  error = lambda got: [float(np.linalg.norm(g - w) / np.linalg.norm(w))
                       for g, w in zip(got, reference)]
  ours, xla = error(outputs['onednn', jnp.bfloat16]), error(outputs['eigen', jnp.bfloat16])
  assert max(xla) > 0  # bfloat16 was computed
  for leaf, (a, b) in enumerate(zip(ours, xla)):
    assert a <= 1.25 * b + 0.02, (leaf, a, b)


def test_what_onednn_does_not_take_stays_with_xla():
  with onednn.enabled(parallel.DATA, 1):
    assert onednn.supports(jnp.float32, ((1, 1), (1, 1)))
    assert onednn.supports(jnp.float32, 'VALID')
    assert not onednn.supports(jnp.bfloat16, ((1, 1), (1, 1)))  # not asked for
    assert not onednn.supports(jnp.float32, ((1, 1), (1, 1)), feature_group_count=2)
    assert not onednn.supports(jnp.float32, ((1, 1), (1, 1)), kernel_dilation=(2, 2))
    assert not onednn.supports(jnp.float32, 'SAME')
  assert not onednn.supports(jnp.float32, 'VALID')  # outside enabled(): XLA's own
  with onednn.enabled(parallel.DATA, 1, ('float32', 'bfloat16')):
    assert onednn.supports(jnp.bfloat16, ((1, 1), (1, 1)))
    assert not onednn.supports(jnp.float16, ((1, 1), (1, 1)))


def test_the_flat_parameters_split_in_one_custom_call_as_jnp_split_does():
  sizes = [5, 1, 12, 3]
  vector = jnp.arange(21, dtype=jnp.float32) * 0.5 - 3
  weights = [jnp.linspace(-1, 1, n) for n in sizes]
  loss = lambda v, split: sum(jnp.sum(w * p ** 2) for w, p in zip(weights, split(v, sizes)))
  reference = lambda v, sizes: jnp.split(v, np.cumsum(sizes)[:-1])

  def traced(split):  # traced where the trainer enables the handlers
    with onednn.enabled(parallel.DATA, 1):
      return jax.jit(jax.value_and_grad(lambda v: loss(v, split))).lower(vector).compile()

  ours = traced(onednn.split)
  assert 'squeezejax_split' in ours.as_text()
  assert 'squeezejax_split' not in traced(reference).as_text()
  (value, grad), (value_ref, grad_ref) = ours(vector), traced(reference)(vector)
  assert value == value_ref
  np.testing.assert_array_equal(grad, grad_ref)
  with onednn.enabled(parallel.DATA, 1):
    pieces = jax.jit(lambda v: onednn.split(v, sizes))(vector)
  for piece, expected in zip(pieces, reference(vector, sizes)):
    np.testing.assert_array_equal(piece, expected)


def test_auto_is_onednn_where_installed_and_a_bad_name_is_one_line():
  assert parallel.resolve_convolutions('auto') == 'onednn'
  assert configs.base_config().cpu_convolutions == 'auto'
  with pytest.raises(UserError, match=r"cpu_convolutions='mkl' is not allowed: expected one of "
                                      r'auto, onednn, eigen, ynnpack'):
    parallel.resolve_convolutions('mkl')


def test_a_failing_build_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  monkeypatch.setenv('CXX', '/bin/false')
  with pytest.raises(UserError, match=r'compiling the oneDNN handlers with /bin/false failed'):
    onednn.build()
  assert not list(tmp_path.rglob('*.so'))  # nothing half-written left in the cache
