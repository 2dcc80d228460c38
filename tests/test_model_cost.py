"""The built modules against the spec: parameter counts, output shapes, MACs vs XLA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import model as model_lib
from squeezejax import spec as spec_lib


@pytest.mark.parametrize('name', sorted(spec_lib.PRESETS))
def test_closed_form_params_equal_the_built_arrays(name):
  spec = spec_lib.preset(name)
  abstract = nnx.eval_shape(lambda: model_lib.create(spec))
  counted = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert counted == spec.cost()['params']


@pytest.mark.parametrize('pct', [0.0, 1.0])
def test_empty_expand_branch_is_not_built(pct):
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16, pct_3x3=pct)
  params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  missing = 'expand3x3' if pct == 0 else 'expand1x1'
  assert all(missing not in fire for fire in params['fires'].values())
  assert sum(x.size for x in jax.tree.leaves(params)) == spec.cost()['params']


# Each layout at the smallest size it accepts, a typical one, and an odd one.
SIZES = {'v1.0': [29, 113], 'v1.1': [25, 97], 'small': [12, 28, 33]}  # 224: test_convert


@pytest.mark.parametrize('layout', sorted(SIZES))
def test_output_shapes_and_one_compilation(layout):
  spec = spec_lib.SqueezeNetSpec(layout=layout, base_e=16, incr_e=16, num_classes=7,
                                 in_channels=1 if layout == 'small' else 3)
  net = model_lib.create(spec)
  graphdef, params = nnx.split(net)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
  for size in SIZES[layout]:
    x = jnp.ones((2, size, size, spec.in_channels))
    assert forward(params, x).shape == (2, 7)
    assert forward(params, x * 2).shape == (2, 7)
    final = spec.layers(size)[-2]  # conv10's output size
    assert final.name == 'conv10' and final.output[:2] >= (1, 1)
  assert forward._cache_size() == len(SIZES[layout])  # one compilation per input shape


def test_macs_agree_with_xla_cost_analysis():
  spec = spec_lib.preset('squeezenet1_1', num_classes=100)
  net = model_lib.create(spec)
  graphdef, params = nnx.split(net)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
  compiled = forward.lower(params, jnp.ones((1, 96, 96, 3))).compile()
  flops = compiled.cost_analysis()['flops']
  macs = spec.cost(96)['macs']
  # XLA counts a multiply-add as 2 flops, plus bias adds, ReLUs and pools, but
  # skips the taps of 3x3 convs that fall on zero padding (many on small maps),
  # which the paper's convention (and torchvision's 0.82/0.35 GMACs) count.
  assert 0.85 * 2 * macs < flops < 1.1 * 2 * macs, (flops, 2 * macs)


def test_dropout_only_with_a_key_and_bfloat16_compute():
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16, conv10_relu=False)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 3))

  @jax.jit
  def outputs(params, params_bf16, key):
    net, half = nnx.merge(graphdef, params), nnx.merge(graphdef_bf16, params_bf16)
    return net(x), net(x, dropout_key=key), half(x)

  graphdef, params = nnx.split(model_lib.create(spec))
  graphdef_bf16, params_bf16 = nnx.split(model_lib.create(spec, dtype=jnp.bfloat16))
  plain, dropped, half = outputs(params, params_bf16, jax.random.key(0))
  assert not np.allclose(dropped, plain)
  assert half.dtype == jnp.float32  # logits are always float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params_bf16))
  np.testing.assert_allclose(half, plain, atol=0.05)
