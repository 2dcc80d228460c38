r"""SqueezeNeXt (Gholami et al. 2018) on real Fashion-MNIST: the width x depth design space.

  squeezejax train --config=experiments/squeezenext.py:quick --workdir=runs/sqnxt
  squeezejax sweep --config=experiments/squeezenext.py:quick --workdir=runs/sqnxt_sweep

The network is `squeezenext_small` (a 3x3 stride-1 stem for 28 px inputs; the
paper's units, BatchNorm everywhere). The sweep crosses the width multiplier with
the stage depths: widths 0.5, 1.0, 2.0 x depths [2,2,2,1] and [6,6,8,1] (the
paper's 23-layer SqNxt-23) in `cpu`; 0.5, 1.0 x [1,1,1,1], [2,2,2,1] in `quick`, whose
point at width 1.0 and depths [2,2,2,1] is the quick training run itself.

Presets (the argument after the colon):
  quick  AdamW, cosine, 400 steps of batch 128 per point, no augmentation
         (README: measured).
  cpu    3 epochs per point.
  test   synthetic data, a tiny network, two points (the test suite).
"""

import ml_collections

from squeezejax.configs import base_config

PRESETS = ('quick', 'cpu', 'test')


def get_config(arg: str = 'quick') -> ml_collections.ConfigDict:
  c = base_config()
  c.model = 'squeezenext_small'
  c.optimizer = 'adamw'
  c.schedule = 'cosine'
  c.weight_decay = 5e-4
  c.augment = 'none'
  if arg == 'quick':
    c.spec.depths = (2, 2, 2, 1)
    c.lr = 4e-3
    c.warmup_steps = 100
    c.total_steps = 400
    c.log_every = 50
    c.checkpoint_every = 200
  elif arg == 'cpu':
    c.lr = 4e-3
    c.warmup_steps = 200
    c.num_epochs = 3.0
    c.checkpoint_every = 500
  elif arg == 'test':
    c.dataset = 'synthetic'
    c.image_size = 16
    c.spec.width = 0.25
    c.spec.depths = (1, 1, 1, 1)
    # No conv biases (the authors' Caffe form) and no stem pool (2x2 maps or more
    # everywhere): pytorchcv's biases before BatchNorm have a zero true gradient, and
    # BatchNorm over 1x1 maps of 32 images amplifies rounding; either makes 1 and 8
    # devices drift apart by 1e-3 within four steps. So does AdamW (the other presets'),
    # which scales the rounding in near-zero gradients up to whole steps: oneDNN sums a
    # device's share of the batch in another order than the whole batch
    # (docs/performance.md).
    c.spec.bias = False
    c.spec.stem_pool = False
    c.optimizer = 'sgd'
    c.lr = 3e-3
    c.schedule = 'constant'  # so a prefix of a longer run is the same run
    c.total_steps = 8
    c.batch_size = 32
    c.eval_batch_size = 48
    c.log_every = 2
    c.checkpoint_every = 4
    c.batch_splits = 1
  else:
    raise ValueError(f'unknown preset {arg!r}: expected one of {", ".join(PRESETS)}')
  return c


def get_sweep(arg: str = 'quick') -> list[dict]:
  if arg == 'test':
    return [{'spec.width': 0.25}, {'spec.width': 0.5}]
  widths, depths = {'quick': ((0.5, 1.0), ((1, 1, 1, 1), (2, 2, 2, 1))),
                    'cpu': ((0.5, 1.0, 2.0), ((2, 2, 2, 1), (6, 6, 8, 1)))}[arg]
  return [{'spec.width': w, 'spec.depths': d} for d in depths for w in widths]


def get_report(arg: str = 'quick') -> dict:
  del arg
  return {
      'x': 'width',
      'figure': 'squeezenext_width_depth.png',
      'title': 'SqueezeNeXt: width multiplier x stage depths (Fashion-MNIST)',
      'caption': 'one point per (width, depths) network; the paper reports ImageNet only',
  }
