"""The family registry: exact parameter counts of every preset (CLI and closed form),
closed form == the built module's arrays, the authors' Caffe files, named features."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import families
from squeezejax import model as model_lib
from squeezejax.errors import UserError

DATA = os.path.join(os.path.dirname(__file__), 'data', 'squeezenext')
EXACT = {
    'alexnet_caffe': 60_965_224, 'alexnet': 61_100_840,
    'squeezenext_1.0_23': 724_056, 'squeezenext_1.0_23v5': 921_816,
    'squeezenext_1.5_23': 1_511_824, 'squeezenext_1.5_23v5': 1_953_616,
    'squeezenext_2.0_23': 2_583_752, 'squeezenext_2.0_23v5': 3_366_344,
    'squeezenext_caffe_1.0_23': 717_280, 'squeezenext_caffe_1.0_G_23': 543_072,
    'squeezenet1_0': 1_248_424, 'squeezenet1_1': 1_235_496,
}


def test_summary_json_gives_the_exact_counts():
  for name, params in EXACT.items():
    out = subprocess.run([sys.executable, '-m', 'squeezejax', 'summary', f'--model={name}',
                          '--json'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result['params'] == params, name
    assert result['spec']['family'] == families.PRESETS[name]
    assert sum(l['params'] for l in result['layers']) == params


def test_summary_list_names_every_preset():
  out = subprocess.run([sys.executable, '-m', 'squeezejax', 'summary', '--list', '--json'],
                       capture_output=True, text=True, timeout=120)
  rows = {r['model']: r for r in json.loads(out.stdout)}
  assert set(rows) == set(families.PRESETS)
  assert all(rows[n]['params'] == p for n, p in EXACT.items())


@pytest.mark.parametrize('name', sorted(families.PRESETS))
def test_closed_form_equals_the_modules_arrays(name):
  spec = families.preset(name)
  params = jax.tree.leaves(model_lib.abstract_params(spec))
  assert sum(int(np.prod(x.shape)) for x in params) == spec.cost()['params']


def caffe_learnable_weights(path):
  """Conv weights, BatchNorm+Scale (gamma, beta) and FC weights of a prototxt."""
  text = open(path).read()
  channels, total = {'data': 3}, 0
  for block in re.findall(r'layer \{(.*?)\n\}', text, re.S):
    kind = re.search(r'type: "(\w+)"', block).group(1)
    bottoms = re.findall(r'bottom: "([^"]+)"', block)
    tops = re.findall(r'top: "([^"]+)"', block)
    num = lambda key, default=None: int(re.search(rf'{key}: (\d+)', block).group(1)) \
        if re.search(rf'{key}: (\d+)', block) else default
    if kind == 'Convolution':
      k = num('kernel_size')
      kh, kw = (k, k) if k else (num('kernel_h'), num('kernel_w'))
      out, group = num('num_output'), num('group', 1)
      total += kh * kw * channels[bottoms[0]] // group * out
      total += out if 'bias_term: false' not in block else 0
      channels[tops[0]] = out
    elif kind == 'Scale':
      total += 2 * channels[bottoms[0]]
    elif kind == 'InnerProduct':
      out = num('num_output')
      total += channels[bottoms[0]] * out + (out if 'bias_term: false' not in block else 0)
      channels[tops[0]] = out
    elif tops and bottoms and kind not in ('Accuracy', 'SoftmaxWithLoss'):
      channels[tops[0]] = channels[bottoms[0]]  # ReLU, BatchNorm, Pooling, Eltwise
  return total


@pytest.mark.parametrize('file,preset', [('1.0-SqNxt-23', 'squeezenext_caffe_1.0_23'),
                                         ('1.0-G-SqNxt-23', 'squeezenext_caffe_1.0_G_23')])
def test_the_authors_caffe_files_count_as_the_presets(file, preset):
  counted = caffe_learnable_weights(os.path.join(DATA, f'{file}.prototxt'))
  assert counted == families.preset(preset).cost()['params'] == EXACT[preset]


def test_features_have_their_strides():
  for name in ('squeezenet_small', 'squeezenext_small', 'alexnet_small'):
    spec = families.preset(name, num_classes=3)
    net = model_lib.create(spec)
    maps = model_lib.features(net, jnp.ones((1, 32, 32, 3)))
    assert set(maps) == set(spec.feature_strides())
    for fmap, stride in maps.values():
      assert fmap.shape[1] == pytest.approx(32 / stride, abs=1), (name, fmap.shape, stride)
    logits, _ = net(jnp.ones((1, 32, 32, 3)), return_features=True)
    np.testing.assert_array_equal(logits, net(jnp.ones((1, 32, 32, 3))))


@pytest.mark.parametrize('name,overrides,match', [
    ('squeezenext_1.0_23', dict(width=0), 'width=0'),
    ('squeezenext_1.0_23', dict(groups=3), 'groups=3'),
    ('squeezenext_1.0_23', dict(depths=(6, 6)), 'one depth per stage'),
    ('squeezenext_1.0_23', dict(squeeze_ratio=1.5), 'squeeze_ratio=1.5'),
    ('alexnet', dict(layout='vgg'), "layout='vgg'"),
    ('alexnet', dict(fc_width=0), 'fc_width=0'),
    ('alexnet', dict(base_e=3), 'base_e is not a field of the alexnet family'),
    ('no_such_net', {}, "model='no_such_net'"),
])
def test_bad_fields_are_one_line_errors(name, overrides, match):
  with pytest.raises(UserError, match=re.escape(match)) as e:
    families.preset(name, **overrides)
  assert '\n' not in str(e.value)


def test_alexnet_caffe_refuses_inputs_fc6_cannot_read():
  with pytest.raises(UserError, match='fc6 reads a 6x6 map'):
    families.preset('alexnet_caffe').check_image_size(256)


def test_spec_round_trips_through_its_dict():
  for name in families.PRESETS:
    spec = families.preset(name)
    assert families.spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
