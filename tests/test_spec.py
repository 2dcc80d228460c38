"""The spec against the paper's numbers, and `squeezejax summary` from the command line."""

import json
import math
import subprocess
import sys

import pytest

from squeezejax import spec as spec_lib
from squeezejax import summary
from squeezejax.errors import UserError

TABLE1 = {  # Iandola et al. 2016, Table 1: weights + biases per layer.
    'conv1': 14_208, 'fire2': 11_920, 'fire3': 12_432, 'fire4': 45_344,
    'fire5': 49_440, 'fire6': 104_880, 'fire7': 111_024, 'fire8': 188_992,
    'fire9': 197_184, 'conv10': 513_000,
}


def test_table1_rows_and_total():
  spec = spec_lib.preset('squeezenet1_0')
  rows = {r.name: r.params for r in spec.layers() if r.params}
  assert rows == TABLE1
  cost = spec.cost()
  assert cost['params'] == 1_248_424
  assert cost['size_label_mb'] == 4.8
  assert [f.s1x1 for f in spec.fires()] == [16, 16, 32, 32, 48, 48, 64, 64]
  assert [f.out_channels for f in spec.fires()] == [128, 128, 256, 256, 384, 384, 512, 512]


def test_v11_total():
  cost = spec_lib.preset('squeezenet1_1').cost()
  rows = {r.name: r.params for r in spec_lib.preset('squeezenet1_1').layers()}
  assert cost['params'] == 1_235_496
  assert rows['conv1'] == 1_792 and rows['fire2'] == 11_408


@pytest.mark.parametrize('sr,params', [(0.25, 1_967_080), (0.5, 3_404_392),
                                       (0.75, 4_841_704), (1.0, 6_279_016)])
def test_figure3a_sizes(sr, params):
  assert spec_lib.preset('squeezenet1_0', squeeze_ratio=sr).cost()['params'] == params


def test_figure3b_midpoint_is_the_13mb_model():
  cost = spec_lib.preset('squeezenet1_0', squeeze_ratio=0.5, pct_3x3=0.5).cost()
  assert cost['params'] == 3_404_392 and cost['size_label_mb'] == 13.0


def test_paper_size_labels():
  assert spec_lib.paper_size_label(4.76) == 4.8
  assert spec_lib.paper_size_label(12.99) == 13.0
  assert spec_lib.paper_size_label(18.47) == 19.0
  assert spec_lib.paper_size_label(23.95) == 24.0


@pytest.mark.parametrize('base_e,incr_e,pct,freq,sr', [
    (64, 32, 0.25, 1, 0.5), (96, 48, 0.75, 3, 0.25), (128, 0, 0.5, 2, 1.0), (40, 24, 0.3, 4, 0.1)])
def test_integer_design_points_follow_the_formula(base_e, incr_e, pct, freq, sr):
  spec = spec_lib.preset('squeezenet1_0', base_e=base_e, incr_e=incr_e, pct_3x3=pct,
                         freq=freq, squeeze_ratio=sr)
  c = spec.conv1.filters
  for i, fire in enumerate(spec.fires()):
    e = base_e + incr_e * (i // freq)
    assert fire.e1x1 + fire.e3x3 == e
    assert fire.e3x3 == math.floor(pct * e + 0.5)
    assert fire.s1x1 == max(1, math.floor(sr * e + 0.5))
    assert fire.in_channels == c
    assert fire.params == c * fire.s1x1 + fire.s1x1 + fire.s1x1 * fire.e1x1 + fire.e1x1 \
        + 9 * fire.s1x1 * fire.e3x3 + fire.e3x3
    c = e


def test_squeeze_never_zero_and_empty_branches():
  spec = spec_lib.preset('squeezenet1_1', base_e=4, incr_e=0, squeeze_ratio=0.01, pct_3x3=1.0)
  assert all(f.s1x1 == 1 and f.e1x1 == 0 and f.e3x3 == 4 for f in spec.fires())
  spec = spec_lib.preset('squeezenet1_1', pct_3x3=0.0)
  assert all(f.e3x3 == 0 for f in spec.fires())


def test_bypass_parameters():
  simple = spec_lib.preset('squeezenet1_0_simple').cost()['params']
  complex_ = spec_lib.preset('squeezenet1_0_complex').cost()['params']
  assert simple == 1_248_424  # simple bypass adds no parameters
  # 1x1 convs around fire2, 4, 6, 8: 96->128, 128->256, 256->384, 384->512.
  assert complex_ - simple == (96 * 128 + 128) + (128 * 256 + 256) + (256 * 384 + 384) \
      + (384 * 512 + 512)
  kinds = [f.bypass for f in spec_lib.preset('squeezenet1_0_complex').fires()]
  assert kinds == ['complex', 'simple'] * 4


def test_macs_match_torchvision():
  # torchvision reports 0.82 and 0.35 GMACs at 224.
  assert round(spec_lib.preset('squeezenet1_0').cost()['macs'] / 1e9, 2) == 0.82
  assert round(spec_lib.preset('squeezenet1_1').cost()['macs'] / 1e9, 2) == 0.35


def test_output_sizes_ceil_mode():
  rows = {r.name: r.output for r in spec_lib.preset('squeezenet1_0').layers(224)}
  assert rows['conv1'] == (109, 109, 96) and rows['maxpool1'] == (54, 54, 96)
  assert rows['maxpool4'] == (27, 27, 256) and rows['maxpool8'] == (13, 13, 512)
  rows = {r.name: r.output for r in spec_lib.preset('squeezenet_small').layers(28)}
  assert rows['maxpool1'][0] == 14 and rows['fire9'][0] == 3


@pytest.mark.parametrize('overrides,match', [
    (dict(squeeze_ratio=0), 'squeeze_ratio=0'), (dict(squeeze_ratio=-0.5), 'squeeze_ratio'),
    (dict(pct_3x3=1.5), 'pct_3x3=1.5'), (dict(bypass='fancy'), "bypass='fancy'"),
    (dict(freq=0), 'freq=0'), (dict(num_classes=0), 'num_classes=0'),
    (dict(base_e=-1), 'base_e=-1'), (dict(layout='v2'), "layout='v2'"),
    (dict(bypass='simple', freq=1), 'fire3'), (dict(init='xavier'), "init='xavier'"),
])
def test_validation_messages(overrides, match):
  with pytest.raises(UserError, match=match):
    spec_lib.preset('squeezenet1_0', **overrides)


def test_image_size_too_small():
  with pytest.raises(UserError, match='image_size=20'):
    spec_lib.preset('squeezenet1_1').layers(20)
  spec_lib.preset('squeezenet1_1').layers(spec_lib.preset('squeezenet1_1').min_image_size())


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'squeezejax', *args],
                        capture_output=True, text=True, timeout=120)


def test_summary_cli_json():
  out = _cli('summary', '--model=squeezenet1_0', '--json')
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  assert result['params'] == 1_248_424
  assert {l['name']: l['params'] for l in result['layers'] if l['params']} == TABLE1
  assert isinstance(result['macs'], int) and abs(result['size_mib'] - 4.7624) < 1e-3
  out = _cli('summary', '--model=squeezenet1_0', '--squeeze_ratio=0.75', '--json')
  assert json.loads(out.stdout)['params'] == 4_841_704


@pytest.mark.parametrize('flag', ['--squeeze_ratio=0', '--squeeze_ratio=-1', '--pct_3x3=1.5',
                                  '--bypass=wide', '--freq=0', '--num_classes=0',
                                  '--image_size=10', '--base_e=-3', '--model=vgg16'])
def test_summary_cli_bad_values(flag):
  out = _cli('summary', flag)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and 'Traceback' not in out.stderr
  name, value = flag[2:].split('=')
  assert name in lines[0] and value in lines[0]


def test_summary_table_text():
  text = summary.table(spec_lib.preset('squeezenet1_0'))
  assert '| fire9 | 13x13x512 |' in text and '1,248,424' in text and '4.8MB' in text
