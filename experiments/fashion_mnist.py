r"""SqueezeNet (small layout) on real Fashion-MNIST.

  squeezejax train --config=experiments/fashion_mnist.py:quick --workdir=runs/fmnist

Presets (the argument after the colon):
  quick  the README's training check: >= 90% top-1 on the 10,000 test images
         within 15 minutes on 2 CPU cores (measured numbers in the README).
  cpu    longer and better converged.
  test   a few steps of a tiny network, for the test suite.

Every field can be overridden: `--config.total_steps=100 --config.spec.squeeze_ratio=0.25`.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Every field the trainer reads, with defaults; experiment files start here."""
  c = ml_collections.ConfigDict()
  # Model: a preset from squeezejax.spec.PRESETS plus metaparameter overrides.
  c.model = 'squeezenet_small'
  c.spec = ml_collections.ConfigDict(dict(
      base_e=128, incr_e=128, pct_3x3=0.5, freq=2, squeeze_ratio=0.125,
      bypass='none', dropout_rate=0.5, conv10_relu=True, init='caffe'))
  c.dtype = 'float32'  # compute dtype; 'bfloat16' on accelerators
  # Data: see squeezejax.data.DATASETS.
  c.dataset = 'fashion_mnist'
  c.data_dir = ''  # TFDS data_dir; '' = TFDS default
  c.train_split = 'train'
  c.eval_split = 'test'
  c.image_size = 0  # 0 = the dataset's own size
  c.augment = 'crop_flip'  # 'none' | 'crop_flip' | 'caffe' | 'inception'
  # Duration, given once: total_steps, or num_epochs when > 0 (converted in train.py).
  c.total_steps = 1000
  c.num_epochs = 0.0
  c.batch_size = 128  # global, across all devices and hosts
  c.accum_steps = 1  # gradient accumulation: micro-batch = batch_size / accum_steps
  c.eval_batch_size = 1000
  # Optimiser.
  c.optimizer = 'sgd'  # 'sgd' (momentum) | 'adamw'
  c.lr = 0.04
  c.schedule = 'linear'  # 'linear' (the paper's decay to 0) | 'cosine' | 'constant'
  c.warmup_steps = 0
  c.momentum = 0.9
  c.weight_decay = 2e-4
  c.grad_clip = 0.0  # global norm; 0 = off
  c.seed = 0
  # Sharding: data parallel over all devices; fsdp also shards parameters and
  # optimizer state over the same 'data' axis.
  c.fsdp = False
  c.num_devices = 0  # 0 = every device; N = the first N (one process only)
  # Multi-host (jax.distributed); empty = single process.
  c.coordinator_address = ''
  c.num_processes = 1
  c.process_id = 0
  # Fine-tuning: initialise from a model directory (checkpoint of train/convert).
  c.init_from = ''
  c.freeze_backbone = False
  # Logging, evaluation, checkpoints (all in steps).
  c.log_every = 50
  c.eval_every = 0  # 0 = only at the end
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  return c


def get_config(arg: str = 'quick') -> ml_collections.ConfigDict:
  c = base_config()
  c.spec.conv10_relu = False  # the paper's ReLU head stalls on 10 classes (DESIGN.md 4)
  c.optimizer = 'adamw'
  c.schedule = 'cosine'
  c.weight_decay = 5e-4
  if arg == 'quick':
    c.spec.base_e = c.spec.incr_e = 64
    c.lr = 2e-3
    c.warmup_steps = 100
    c.num_epochs = 6.0
    c.batch_size = 128
    c.checkpoint_every = 500
  elif arg == 'cpu':
    c.lr = 2e-3
    c.warmup_steps = 200
    c.num_epochs = 20.0
  elif arg == 'test':
    c.dataset = 'synthetic'
    c.spec.base_e = c.spec.incr_e = 16
    c.image_size = 16
    c.lr = 3e-3
    c.schedule = 'constant'  # so a prefix of a longer run is the same run
    c.total_steps = 8
    c.batch_size = 32
    c.eval_batch_size = 48
    c.log_every = 2
    c.checkpoint_every = 4
  else:
    raise ValueError(f'unknown preset {arg!r}: expected quick, cpu or test')
  return c
