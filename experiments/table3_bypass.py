r"""Table 3 of the SqueezeNet paper: no bypass, simple bypass, complex bypass.

  squeezejax sweep --config=experiments/table3_bypass.py:quick --workdir=runs/table3 --seeds=2

SqueezeNet's metaparameters (SR 0.125, pct_3x3 0.5, base_e = incr_e = 128,
freq 2) with the three macro-architectures of the paper's Figure 2:
  none     vanilla SqueezeNet
  simple   identity bypass around fire3, 5, 7, 9 (added after the pool in v1.0)
  complex  simple bypass plus a 1x1 conv bypass (with ReLU) around fire2, 4, 6, 8
The paper's ImageNet numbers are declared in `get_report`. Its complex-bypass
size is larger than what squeezejax builds from the paper's description (see the
README), so the report gives both.

Presets (the argument after the colon), as in fig3a_squeeze_ratio.py:
  quick  real Fashion-MNIST, small layout, base_e = incr_e = 32, 800 steps per
         point, three points. At this budget seed noise hides the bypass effect.
  cpu    Fashion-MNIST, base_e = incr_e = 64, 2 epochs per point; how many seeds
         decide the claims at this budget: README, measured.
  paper  ImageNet, layout v1.0, the Caffe recipe (see fig3a_squeeze_ratio.py).
  test   synthetic data, a tiny network, two points (none, simple).
"""

import os

from squeezejax import configs

BYPASSES = ('none', 'simple', 'complex')


def get_config(arg: str = 'quick'):
  fig3a = configs.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fig3a_squeeze_ratio.py'))
  return fig3a.design_space_config(arg)


def get_sweep(arg: str = 'quick') -> list[dict]:
  grid = ('none', 'simple') if arg == 'test' else BYPASSES
  return [{'spec.bypass': bypass} for bypass in grid]


def get_report(arg: str = 'quick') -> dict:
  """What the report draws: one position per bypass, beside the paper's Table 3."""
  del arg  # every preset is compared with the same paper table
  return {
      'x': 'bypass',
      'figure': 'table3_bypass.png',
      'title': 'Table 3: bypass connections',
      'caption': 'paper, Table 3: simple bypass best (+2.9 top-1), complex bypass between',
      'reference': {
          'label': 'paper',
          'source': 'Iandola et al. 2016, Table 3: ImageNet, SqueezeNet v1.0',
          'setting': {'dataset': 'imagenet2012', 'layout': 'v1.0'},
          'baseline': 'none',  # vanilla SqueezeNet
          'points': [  # sizes as the paper states them
              dict(value='none', top1=0.575, top5=0.803, size_mib=4.8, stated_mb=4.8),
              dict(value='simple', top1=0.604, top5=0.825, size_mib=4.8, stated_mb=4.8),
              dict(value='complex', top1=0.588, top5=0.820, size_mib=7.7, stated_mb=7.7),
          ]},
      'margin': 0.005,
      'claims': [
          dict(claim='simple bypass beats none', test='greater',
               a={'bypass': 'none'}, b={'bypass': 'simple'}),
          dict(claim='complex bypass beats none', test='greater',
               a={'bypass': 'none'}, b={'bypass': 'complex'}),
          dict(claim='simple bypass is at least as good as complex', test='at_least',
               a={'bypass': 'complex'}, b={'bypass': 'simple'}),
      ],
  }
