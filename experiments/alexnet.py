r"""AlexNet, the SqueezeNet paper's baseline, with the same trainer.

  squeezejax train --config=experiments/alexnet.py:quick --workdir=runs/alexnet

Presets (the argument after the colon):
  quick  `alexnet_small` on real Fashion-MNIST (28 px): torchvision-style init,
         AdamW, cosine, 300 steps of batch 128 (0.64 epochs: AlexNet-small costs about
         11x SqueezeNet-small's MACs a step), dropout 0.5 (README: measured).
  paper  `alexnet_caffe` on ImageNet with bvlc_alexnet's recipe: Caffe's Gaussian
         init (0.01, 0.005 for fc6/fc7; biases 0 or 0.1), SGD momentum 0.9, lr 0.01,
         weight decay 5e-4, batch 256, 227 px random crops and flips, 90 epochs
         (450k steps). Caffe divides lr by 10 every 100k steps; the trainer's
         schedules are linear/cosine/constant, so this uses linear decay to 0.
  test   synthetic data, a tiny run (the test suite).
"""

import ml_collections

from squeezejax.configs import base_config

PRESETS = ('quick', 'paper', 'test')


def get_config(arg: str = 'quick') -> ml_collections.ConfigDict:
  c = base_config()
  if arg == 'quick':
    c.model = 'alexnet_small'
    c.spec.init = 'torchvision'
    c.optimizer = 'adamw'
    c.schedule = 'cosine'
    c.lr = 1e-3
    c.weight_decay = 5e-4
    c.warmup_steps = 30
    c.augment = 'none'
    c.num_epochs = None
    c.total_steps = 300
    c.batch_size = 128
    c.log_every = 25
    c.checkpoint_every = 100
  elif arg == 'paper':
    c.model = 'alexnet_caffe'
    c.spec.init = 'caffe'
    c.dataset = 'imagenet2012'
    c.eval_split = 'validation'
    c.image_size = 227
    c.augment = 'crop_flip'
    c.optimizer = 'sgd'
    c.schedule = 'linear'
    c.lr = 0.01
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.batch_size = 256
    c.total_steps = 450_000
    c.dtype = 'bfloat16'
    c.log_every = 200
    c.checkpoint_every = 5000
  elif arg == 'test':
    c.model = 'alexnet_small'
    c.spec.fc_width = 64
    c.dataset = 'synthetic'
    c.image_size = 16
    c.lr = 1e-3
    c.optimizer = 'adamw'
    c.schedule = 'constant'
    c.total_steps = 4
    c.batch_size = 16
    c.eval_batch_size = 48
    c.log_every = 2
    c.checkpoint_every = 2
    c.batch_splits = 1
  else:
    raise ValueError(f'unknown preset {arg!r}: expected one of {", ".join(PRESETS)}')
  return c
