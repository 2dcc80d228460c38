r"""Figure 3(a) of the SqueezeNet paper: accuracy and model size vs squeeze ratio SR.

  squeezejax sweep --config=experiments/fig3a_squeeze_ratio.py:quick --workdir=runs/fig3a
  squeezejax report --workdir=runs/fig3a      # (the sweep also writes the report)

The design space: base_e = incr_e = 128, pct_3x3 = 0.5, freq = 2, SR swept over
0.125, 0.25, 0.5, 0.75, 1.0 (the paper's grid). What the paper reports for it
(ImageNet, v1.0) is declared in `get_report`, which the report draws beside the
sweep's own points.

Presets (the argument after the colon):
  quick  real Fashion-MNIST, small layout, base_e = incr_e = 32, 800 steps per
         point: checks the whole path (train, collect, report) in minutes on a
         CPU; one seed's noise is of the order of the differences between points,
         so use --seeds=3 --vmap_seeds or the cpu preset for a shape (README:
         measured).
  cpu    Fashion-MNIST, base_e = incr_e = 64, 2 epochs per point.
  paper  ImageNet (imagenet2012), layout v1.0 at 227 px, the Caffe recipe: SGD
         momentum 0.9, lr 0.04 decaying linearly to 0 over 170k steps, batch 512
         (accumulated), weight decay 2e-4, conv10 ReLU; base_e = incr_e = 128.
  test   synthetic data, a tiny network, two points (the test suite).

fig3b_pct_3x3.py and table3_bypass.py start from `design_space_config` and
compute the paper's model sizes with `paper_size` below.
"""

import os

from squeezejax import configs
from squeezejax import spec

_HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ('quick', 'cpu', 'paper', 'test')
SQUEEZE_RATIOS = (0.125, 0.25, 0.5, 0.75, 1.0)


def _fashion_mnist():
  return configs.load_module(os.path.join(_HERE, 'fashion_mnist.py'))


def design_space_config(arg: str):
  """The presets shared by the Figure 3 and Table 3 experiments (SqueezeNet's SR 0.125)."""
  fashion_mnist = _fashion_mnist()
  if arg == 'quick':
    c = fashion_mnist.get_config('quick')
    # A short budget needs a fast start: the Fashion-MNIST quick recipe (He init, no
    # dropout or augmentation) with a higher lr.
    c.spec.base_e = c.spec.incr_e = 32
    c.lr = 8e-3
    c.num_epochs = None
    c.total_steps = 800
    # 200 warm-up steps: with 50, SR 1.0 could stall at chance (loss ln 10; README).
    c.warmup_steps = 200
    c.checkpoint_every = 200
    c.log_every = 50
  elif arg == 'cpu':
    c = fashion_mnist.get_config('quick')
    c.spec.base_e = c.spec.incr_e = 64
    c.num_epochs = 2.0
    c.checkpoint_every = 500
  elif arg == 'paper':
    # base_config() is the paper's recipe: conv10 ReLU, Caffe init, SGD momentum 0.9,
    # lr 0.04 decaying linearly to 0, weight decay 2e-4, no warm-up.
    c = configs.base_config()
    c.model = 'squeezenet1_0'
    c.dataset = 'imagenet2012'
    c.eval_split = 'validation'
    c.image_size = 227  # Caffe's crop; conv1 7x7/2 unpadded -> 111
    c.augment = 'caffe'  # random 227 crops, per-channel mean subtraction, no flips
    c.dtype = 'bfloat16'
    c.total_steps = 170_000
    # Global batch 512 as in the paper (Caffe: 32 x 16 accumulated passes); raise
    # accum_steps where 512 images do not fit on the devices at once.
    c.batch_size = 512
    c.accum_steps = 4
    c.log_every = 200
    c.checkpoint_every = 2000
  elif arg == 'test':
    c = fashion_mnist.get_config('test')
  else:
    raise ValueError(f'unknown preset {arg!r}: expected one of {", ".join(PRESETS)}')
  return c  # the presets' spec is SqueezeNet's point: SR 0.125, pct_3x3 0.5, freq 2


def get_config(arg: str = 'quick'):
  return design_space_config(arg)


def get_sweep(arg: str = 'quick') -> list[dict]:
  ratios = (0.125, 0.5) if arg == 'test' else SQUEEZE_RATIOS
  return [{'spec.squeeze_ratio': sr} for sr in ratios]


def paper_size(**metaparameters) -> float:
  """Float32 MiB of a v1.0 design point, computed (the paper states it rounded, in MB)."""
  return spec.SqueezeNetSpec(layout='v1.0', **metaparameters).cost()['size_mib']


def get_report(arg: str = 'quick') -> dict:
  """What the report draws: SR beside the paper's stated numbers (only those: the
  figure's other points are plot marks, not numbers), and the paper's claims."""
  del arg  # every preset is compared with the same paper figure
  return {
      'x': 'squeeze_ratio',
      'figure': 'fig3a_squeeze_ratio.png',
      'title': 'Figure 3(a): squeeze ratio (SR)',
      'caption': 'paper, Fig. 3(a): top-5 80.3% at SR 0.125 rising to a plateau of 86.0% '
                 'at SR 0.75; SR 1.0 (24MB) no better',
      'reference': {
          'label': 'paper',
          'source': 'Iandola et al. 2016, Figure 3(a): ImageNet, SqueezeNet v1.0',
          'setting': {'dataset': 'imagenet2012', 'layout': 'v1.0'},
          'baseline': 0.125,  # SqueezeNet: the changes are measured from it
          # SR 0.125 is SqueezeNet (Table 3's vanilla); SR 0.5 is Figure 3(b)'s 50% point.
          'points': [
              dict(value=0.125, top1=0.575, top5=0.803, stated_mb=4.8,
                   size_mib=paper_size(squeeze_ratio=0.125)),
              dict(value=0.5, top1=None, top5=0.856, stated_mb=13.0,
                   size_mib=paper_size(squeeze_ratio=0.5)),
              dict(value=0.75, top1=None, top5=0.860, stated_mb=19.0,
                   size_mib=paper_size(squeeze_ratio=0.75)),
          ]},
      # The paper's findings for this figure, tested on the sweep's own results
      # (squeezejax.findings): b - a of top-1, paired by seed.
      'margin': 0.005,  # half a point of top-1: the smallest difference that matters
      'claims': [
          dict(claim='accuracy rises from SR 0.125 to SR 0.75', test='greater',
               a={'squeeze_ratio': 0.125}, b={'squeeze_ratio': 0.75}),
          dict(claim='SR 1.0 is no better than SR 0.75', test='at_most',
               a={'squeeze_ratio': 0.75}, b={'squeeze_ratio': 1.0}),
      ],
  }
