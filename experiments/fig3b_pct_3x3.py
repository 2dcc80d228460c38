r"""Figure 3(b) of the SqueezeNet paper: accuracy and model size vs the share of 3x3 filters.

  squeezejax sweep --config=experiments/fig3b_pct_3x3.py:quick --workdir=runs/fig3b

The design space: base_e = incr_e = 128, freq = 2, squeeze ratio SR = 0.5,
pct_3x3 swept from 1% to 99% (the paper's grid: 1, 12.5, 25, 37.5, 50, 62.5, 75,
87.5 and 99%). The paper (ImageNet, v1.0) finds that more 3x3 filters make the
model larger without making it more accurate beyond 50% (the same network as
SR 0.5 in Figure 3(a)); its stated number is declared in `get_report`.

Presets (the argument after the colon), as in fig3a_squeeze_ratio.py:
  quick  real Fashion-MNIST, small layout, base_e = incr_e = 32, 800 steps per
         point, five points (1, 25, 50, 75, 99%); seed noise is of the order of
         the differences: use --seeds=3 to see a trend.
  cpu    Fashion-MNIST, base_e = incr_e = 64, 2 epochs per point, the paper's grid.
  paper  ImageNet, layout v1.0, the Caffe recipe (see fig3a_squeeze_ratio.py).
  test   synthetic data, a tiny network, two points.
"""

import os

from squeezejax import configs

PCT_3X3 = (0.01, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.99)
QUICK_PCT_3X3 = (0.01, 0.25, 0.5, 0.75, 0.99)


def _fig3a():
  return configs.load_module(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fig3a_squeeze_ratio.py'))


def get_config(arg: str = 'quick'):
  c = _fig3a().design_space_config(arg)
  c.spec.squeeze_ratio = 0.5
  return c


def get_sweep(arg: str = 'quick') -> list[dict]:
  grid = {'quick': QUICK_PCT_3X3, 'test': (0.25, 0.75)}.get(arg, PCT_3X3)
  return [{'spec.pct_3x3': pct} for pct in grid]


def get_report(arg: str = 'quick') -> dict:
  """What the report draws: pct_3x3 beside the one number the paper states for it."""
  del arg  # every preset is compared with the same paper figure
  return {
      'x': 'pct_3x3',
      'figure': 'fig3b_pct_3x3.png',
      'title': 'Figure 3(b): share of 3x3 expand filters',
      'caption': 'paper, Fig. 3(b): top-5 plateaus at 85.6% with 50% 3x3 filters (13MB)',
      'reference': {
          'label': 'paper',
          'source': 'Iandola et al. 2016, Figure 3(b): ImageNet, SqueezeNet v1.0 at SR 0.5',
          'setting': {'dataset': 'imagenet2012', 'layout': 'v1.0'},
          'baseline': 0.5,  # the paper's one stated point (SR 0.5 of Figure 3(a))
          'points': [dict(value=0.5, top1=None, top5=0.856, stated_mb=13.0,
                          size_mib=_fig3a().paper_size(squeeze_ratio=0.5, pct_3x3=0.5))]},
      # "Rises up to 50% and plateaus after", as two tests of the sweep's endpoints
      # (the quick grid: 1, 25, 50, 75, 99%; the full grid has 1% and 99% too).
      'margin': 0.005,
      'claims': [
          dict(claim='accuracy rises from 1% to 50% 3x3 filters', test='greater',
               a={'pct_3x3': 0.01}, b={'pct_3x3': 0.5}),
          dict(claim='75% 3x3 is no better than 50%', test='at_most',
               a={'pct_3x3': 0.5}, b={'pct_3x3': 0.75}),
          dict(claim='99% 3x3 is no better than 50%', test='at_most',
               a={'pct_3x3': 0.5}, b={'pct_3x3': 0.99}),
      ],
  }
