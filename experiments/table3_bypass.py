r"""Table 3 of the SqueezeNet paper: no bypass, simple bypass, complex bypass.

  squeezejax sweep --config=experiments/table3_bypass.py:quick --workdir=runs/table3 --seeds=2

SqueezeNet's metaparameters (SR 0.125, pct_3x3 0.5, base_e = incr_e = 128,
freq 2) with the three macro-architectures of the paper's Figure 2:
  none     vanilla SqueezeNet
  simple   identity bypass around fire3, 5, 7, 9 (added after the pool in v1.0)
  complex  simple bypass plus a 1x1 conv bypass (with ReLU) around fire2, 4, 6, 8
Paper (ImageNet top-1 / top-5 / size): vanilla 57.5 / 80.3 / 4.8MB; simple
60.4 / 82.5 / 4.8MB; complex 58.8 / 82.0 / 7.7MB (what squeezejax builds for the
complex bypass is 1.59M parameters, 6.1 MiB: see the README).

Presets (the argument after the colon), as in fig3a_squeeze_ratio.py:
  quick  real Fashion-MNIST, small layout, base_e = incr_e = 32, 800 steps per
         point: three points in about 5 minutes on 2 CPU cores (by the measured
         per-point cost of fig3a's quick sweep; not run as a whole). At this
         budget seed noise (several points of top-1) hides the bypass effect:
         use --seeds=3 or the cpu preset.
  cpu    Fashion-MNIST, base_e = incr_e = 64, 2 epochs per point.
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
