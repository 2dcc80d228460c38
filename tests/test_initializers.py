"""Kernels drawn together (squeezejax.initializers) are jax.nn.initializers' numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import initializers, parallel
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax import spec_alexnet, spec_squeezenext

SPECS = {
    'squeezenet1_1': spec_lib.preset('squeezenet1_1'),
    'squeezenet_small caffe init': spec_lib.preset('squeezenet_small', init='caffe'),
    'alexnet_caffe': spec_alexnet.AlexNetSpec(**spec_alexnet.PRESETS['alexnet_caffe']),
    'alexnet_small': spec_alexnet.AlexNetSpec(**spec_alexnet.PRESETS['alexnet_small']),
    'squeezenext_small': spec_squeezenext.SqueezeNeXtSpec(
        **spec_squeezenext.PRESETS['squeezenext_small']),
}


def flax_initializer(init: initializers.Random):
  if init.fan_in_scale is None:
    return nnx.initializers.normal(init.stddev)
  return nnx.initializers.variance_scaling(init.fan_in_scale, 'fan_in', init.distribution)


def _params_program(spec):
  """The trainer's way: jitted, the seed an argument, compiled as it compiles it."""
  return jax.jit(lambda seed: model_lib.split_weights(
      model_lib.create(spec, seed=jax.random.key(seed)))[0],
                 compiler_options=parallel.run_once_compiler_options())


@pytest.mark.parametrize('name', SPECS)
def test_a_network_drawn_together_has_flax_initializers_numbers(name, monkeypatch):
  spec = SPECS[name]
  ours = _params_program(spec)(jnp.uint32(3))
  # The reference: each kernel drawn by itself, by flax's own initializer.
  monkeypatch.setattr(initializers.Random, '__call__',
                      lambda self, key, shape, dtype=jnp.float32: flax_initializer(self)(
                          key, shape, dtype))
  theirs = _params_program(spec)(jnp.uint32(3))
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  assert any(float(jnp.std(a)) > 0 for a in jax.tree.leaves(ours))


@pytest.mark.parametrize('name', ['squeezenet1_1', 'squeezenext_small'])
def test_the_run_once_options_draw_the_bits_of_the_default_ones(name):
  """The trainer compiles its initialisation with parallel.run_once_compiler_options
  (faster to compile on CPU); the network it draws is the one XLA's defaults draw."""
  spec = SPECS[name]
  default = jax.jit(lambda seed: model_lib.split_weights(
      model_lib.create(spec, seed=jax.random.key(seed)))[0])
  for a, b in zip(jax.tree.leaves(_params_program(spec)(jnp.uint32(5))),
                  jax.tree.leaves(default(jnp.uint32(5))), strict=True):
    np.testing.assert_array_equal(a, b)


def test_an_initializer_called_alone_draws_the_same_numbers():
  key = jax.random.key(7)
  for init in (initializers.he_uniform(), initializers.uniform_fan_in(1 / 3),
               initializers.normal(0.01)):
    np.testing.assert_array_equal(init(key, (3, 3, 5, 7)),
                                  flax_initializer(init)(key, (3, 3, 5, 7)))


def test_the_initialisation_program_has_far_fewer_kernels(monkeypatch):
  """What XLA:CPU compiles: its fused kernels (one or more per kernel drawn alone)."""
  spec = SPECS['squeezenet1_1']
  kernels = lambda: _params_program(spec).lower(jnp.uint32(0)).compile().as_text().count(
      ' fusion(')
  ours = kernels()
  monkeypatch.setattr(initializers.Random, '__call__',
                      lambda self, key, shape, dtype=jnp.float32: flax_initializer(self)(
                          key, shape, dtype))
  assert ours * 2 < kernels()


def test_batches_bound_their_padding():
  # AlexNet's fc6, fc7, fc8, then convolutions and a small layer's sizes.
  sizes = [37_748_736, 16_777_216, 4_096_000, 884_736, 663_552, 307_200, 34_848, 100]
  draws = [initializers._Draw(None, None, None, (n,), jnp.float32)  # pylint: disable=protected-access
           for n in sizes]
  batches = list(initializers._batches(draws))  # pylint: disable=protected-access
  assert [d.size for b in batches for d in b] == sizes
  assert 1 < len(batches) < len(sizes)
  for batch in batches:
    kept = sum(d.size for d in batch)
    padded = len(batch) * batch[0].size
    assert padded <= max(initializers.MAX_PADDING_FACTOR * kept, initializers.FREE_PADDING)


def test_without_partitionable_threefry_each_kernel_is_drawn_alone(monkeypatch):
  """There a draw depends on its shape, so batching would change the numbers."""
  spec = SPECS['squeezenet1_1']
  jax.config.update('jax_threefry_partitionable', False)
  try:
    ours = _params_program(spec)(jnp.uint32(3))
    monkeypatch.setattr(initializers.Random, '__call__',
                        lambda self, key, shape, dtype=jnp.float32: flax_initializer(self)(
                            key, shape, dtype))
    theirs = _params_program(spec)(jnp.uint32(3))
  finally:
    jax.config.update('jax_threefry_partitionable', True)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
