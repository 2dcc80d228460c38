"""Python configs: `path/to/file.py:arg` -> get_config(arg), plus `--config.a.b=v` overrides.

The same syntax as ml_collections' config_flags, without absl's global flag
state, so the CLI, sweeps and tests all load configs through one function.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

import ml_collections

from squeezejax.errors import UserError


class ConfigError(UserError):
  pass


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
  # Each micro-batch's gradient as the mean over this many independent sub-batches,
  # which XLA:CPU runs side by side on its cores; 0 = 4 on CPU where it divides
  # the per-device micro-batch, else 1 (docs/performance.md).
  c.batch_splits = 0
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
  # Train seeds seed .. seed+num_seeds-1 together in one vmapped step (same data
  # order; own init, augmentation and dropout): many small runs for one compile.
  c.num_seeds = 1
  # Sharding: data parallel over all devices; fsdp also shards parameters and
  # optimizer state over the same 'data' axis.
  c.fsdp = False
  c.num_devices = 0  # 0 = every device; N = the first N (one process only)
  # XLA:CPU convolutions: 'eigen' (every core) | 'ynnpack' (XLA's default); see
  # docs/performance.md. Ignored on GPU and TPU.
  c.cpu_convolutions = 'eigen'
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


def load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f'--config={path!r}: no such file')
  name = 'squeezejax_config_' + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'--config={path!r} defines no get_config(arg)')
  return module


def load(config_arg: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]`, applies string overrides, returns a locked ConfigDict."""
  path, _, arg = config_arg.partition(':')
  module = load_module(path)
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except UserError:
    raise
  except (KeyError, ValueError) as e:
    raise ConfigError(f'--config={config_arg!r}: {e}') from None
  config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
  config.lock()
  apply_overrides(config, overrides or {})
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, object]) -> None:
  """Sets dotted keys; strings are parsed as Python literals where possible."""
  for key, raw in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ConfigError(f'--config.{key}: unknown config key {part!r}')
      node = node[part]
    if leaf not in node:
      raise ConfigError(f'--config.{key}: unknown config key; known keys here: '
                        f'{", ".join(sorted(node.keys()))}')
    value = _parse(raw) if isinstance(raw, str) else raw
    current = node[leaf]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(current, str) and not isinstance(value, str):
      value = str(raw)
    try:
      with node.unlocked():
        node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f'--config.{key}={raw!r}: expected {type(current).__name__} '
                        f'({e})') from None


def _parse(raw: str):
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separates `--config.key=value` (or `--config.key value`) from other arguments."""
  rest, overrides = [], {}
  it = iter(argv)
  for arg in it:
    if arg.startswith('--config.'):
      key, eq, value = arg[len('--config.'):].partition('=')
      if not eq:
        value = next(it, None)
        if value is None:
          raise ConfigError(f'--config.{key} needs a value')
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides
