r"""Figure 3(b) of the SqueezeNet paper: accuracy and model size vs the share of 3x3 filters.

  squeezejax sweep --config=experiments/fig3b_pct_3x3.py:quick --workdir=runs/fig3b

The design space: base_e = incr_e = 128, freq = 2, squeeze ratio SR = 0.5,
pct_3x3 swept from 1% to 99% (the paper's grid: 1, 12.5, 25, 37.5, 50, 62.5, 75,
87.5 and 99%). The paper (ImageNet, v1.0): top-5 plateaus at 85.6% with 50% 3x3
filters (13MB, the same network as SR 0.5 in Figure 3(a)); more 3x3 filters make
the model larger without making it more accurate.

Presets (the argument after the colon), as in fig3a_squeeze_ratio.py:
  quick  real Fashion-MNIST, small layout, base_e = incr_e = 32, 800 steps per
         point, five points (1, 25, 50, 75, 99%): about 8 minutes on 2 CPU cores
         (by the measured per-point cost of fig3a's quick sweep; not run as a
         whole). Expect top-1 around 84-87% with seed noise of one or two
         points: use --seeds=3 to see a trend.
  cpu    Fashion-MNIST, base_e = incr_e = 64, 2 epochs per point, the paper's grid.
  paper  ImageNet, layout v1.0, the Caffe recipe (see fig3a_squeeze_ratio.py).
  test   synthetic data, a tiny network, two points.
"""

import os

from squeezejax import configs

PCT_3X3 = (0.01, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.99)
QUICK_PCT_3X3 = (0.01, 0.25, 0.5, 0.75, 0.99)


def get_config(arg: str = 'quick'):
  fig3a = configs.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fig3a_squeeze_ratio.py'))
  c = fig3a.design_space_config(arg)
  c.spec.squeeze_ratio = 0.5
  return c


def get_sweep(arg: str = 'quick') -> list[dict]:
  grid = {'quick': QUICK_PCT_3X3, 'test': (0.25, 0.75)}.get(arg, PCT_3X3)
  return [{'spec.pct_3x3': pct} for pct in grid]
