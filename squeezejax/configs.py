"""Configs: `path/to/file.py:arg` -> get_config(arg), `--config.a.b=v` overrides, checks,
and the one function that turns a config into a network spec.

The same syntax as ml_collections' config_flags, without absl's global flag
state, so the CLI, sweeps and tests all load configs through `load`.

Two rules keep a config honest:
  * `config.spec.*` fields are "unset" (None) until a file or a flag sets one; a
    set field wins over the `config.model` preset, an unset one leaves the
    preset's value (`spec_from_config`).
  * The duration is given once: exactly one of `total_steps` and `num_epochs`.
    Setting one on the command line (or in a sweep point) unsets the other.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import sys
from typing import Any

import ml_collections
from ml_collections import config_dict

from squeezejax import families
from squeezejax.data import core as data_core
from squeezejax.errors import UserError

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('linear', 'cosine', 'constant')
DTYPES = ('float32', 'bfloat16')
CPU_CONVOLUTIONS = ('auto', 'onednn', 'eigen', 'ynnpack')
LAYERS = ('auto', 'textbook', 'cpu')  # squeezejax.layers' formulations
DATA_ON_DEVICE = ('auto', 'on', 'off')
SEED_AXES = ('auto', 'vmap', 'map')
DURATIONS = ('total_steps', 'num_epochs')
# Spec fields the dataset decides; every other spec field is a `config.spec.*` key.
FROM_DATASET = ('num_classes', 'in_channels')


def spec_keys() -> tuple[str, ...]:
  """The metaparameters a config may set: every family's spec fields (a set field
  must belong to the family of config.model)."""
  return tuple(k for k in families.field_types() if k not in FROM_DATASET)


def base_config() -> ml_collections.ConfigDict:
  """Every field the trainer reads, with defaults; experiment files start here."""
  c = ml_collections.ConfigDict()
  # Model: a preset of squeezejax.families.PRESETS; `spec.*` fields override it when set.
  c.model = 'squeezenet_small'
  hints = families.field_types()
  c.spec = ml_collections.ConfigDict(
      {k: config_dict.placeholder(hints[k]) for k in spec_keys()})
  c.dtype = 'float32'  # compute dtype; 'bfloat16' on accelerators
  # The layers' formulation (squeezejax.layers): 'auto' = 'cpu' on XLA:CPU, else 'textbook'.
  c.layers = 'auto'
  # Data: see squeezejax.data.DATASETS.
  c.dataset = 'fashion_mnist'
  c.data_dir = ''  # TFDS data_dir; '' = TFDS default
  c.train_split = 'train'
  c.eval_split = 'test'
  c.image_size = 0  # 0 = the dataset's own size
  c.augment = 'crop_flip'  # 'none' | 'crop_flip' | 'caffe' | 'inception'
  # Keep an in-memory training split on the devices (uint8, replicated) and gather each
  # batch inside the jitted step: 'auto' = on for GPU/TPU, off on CPU.
  c.data_on_device = 'auto'
  # Duration: exactly one of the two (see the module docstring).
  c.total_steps = config_dict.placeholder(int)
  c.num_epochs = config_dict.placeholder(float)
  c.batch_size = 128  # global, across all devices and hosts
  c.accum_steps = 1  # gradient accumulation: micro-batch = batch_size / accum_steps
  # Each micro-batch's gradient as the mean over this many independent sub-batches,
  # which XLA:CPU runs side by side on its cores; 0 = 4 where one CPU device has the
  # whole machine and 4 divides the per-device micro-batch, else 1.
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
  # Train seeds seed .. seed+num_seeds-1 together in one jitted step (same data
  # order; own init, augmentation and dropout): many small runs for one compile.
  c.num_seeds = 1
  # How that step runs the seeds: 'vmap' (batched: grouped convolutions, which XLA:CPU
  # runs slowly) | 'map' (each seed's own ordinary convolutions, unrolled in the step) |
  # 'auto' = 'map' on CPU, else 'vmap'. The same state and checkpoints either way.
  c.seed_axis = 'auto'
  # Sharding: data parallel over all devices; fsdp also shards parameters and
  # optimizer state over the same 'data' axis.
  c.fsdp = False
  c.num_devices = 0  # 0 = every device; N = the first N (one process only)
  # CPU convolutions: 'onednn' (custom calls into oneDNN) | 'eigen' | 'ynnpack'
  # (XLA's own); 'auto' is onednn where it is installed, else eigen. GPUs and TPUs
  # ignore it.
  c.cpu_convolutions = 'auto'
  # Multi-host (jax.distributed); empty = single process.
  c.coordinator_address = ''
  c.num_processes = 1
  c.process_id = 0
  # Fine-tuning: initialise from a model directory (checkpoint of train/convert).
  c.init_from = ''
  c.freeze_backbone = False
  # Deep Compression retraining (squeezejax compress): 'pruned' keeps kernel weights that
  # are 0 at the start at 0; 'shared' also trains one value per cluster of equal weights.
  c.compressed = ''
  # Logging, evaluation, checkpoints (all in steps).
  c.log_every = 50
  c.eval_every = 0  # 0 = only at the end
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  return c


# -- loading ------------------------------------------------------------------------


def load_module(path: str):
  if not os.path.isfile(path):
    raise UserError(f'--config={path!r}: no such file')
  name = 'squeezejax_config_' + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  if module_spec is None:
    raise UserError(f'--config={path!r} is not a Python file: expected path/to/file.py')
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f'--config={path!r}: syntax error at line {e.lineno}: {e.msg}') from None
  except Exception as e:  # pylint: disable=broad-except  # the user's file: any error
    raise UserError(f'--config={path!r} failed to load: {_located(e, path)}') from None
  if not hasattr(module, 'get_config'):
    raise UserError(f'--config={path!r} defines no get_config(arg)')
  return module


def call(module, function: str, config_arg: str):
  """`module.function(arg)` of `FILE.py:arg`; a ValueError/KeyError there is a bad preset."""
  path, _, arg = config_arg.partition(':')
  try:
    return getattr(module, function)(arg) if arg else getattr(module, function)()
  except UserError:
    raise
  except (KeyError, ValueError) as e:  # the usual "unknown preset"
    raise UserError(f'--config={config_arg!r}: {e}') from None
  except Exception as e:  # pylint: disable=broad-except  # the user's file: any error
    raise UserError(f'--config={config_arg!r}: {function} failed: {_located(e, path)}') from None


def _located(error: BaseException, path: str) -> str:
  """'TypeError at line 12: ...' for an error raised in the user's file."""
  import traceback  # pylint: disable=g-import-not-at-top
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(f.filename) == os.path.abspath(path)]
  where = f' at line {lines[-1]}' if lines else ''
  text = (str(error).strip().splitlines() or [''])[0]
  return f'{type(error).__name__}{where}: {text}'.rstrip(': ')


def load(config_arg: str, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]`, applies overrides, checks it; returns a locked ConfigDict."""
  config = call(load_module(config_arg.partition(':')[0]), 'get_config', config_arg)
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f'--config={config_arg!r}: get_config returned a {type(config).__name__}: '
                    'expected an ml_collections.ConfigDict from squeezejax.configs.base_config()')
  config.lock()
  apply_overrides(config, overrides or {})
  validate(config)
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted keys; strings are parsed as Python literals where possible.

  Setting one duration field unsets the other, so that a duration given on the
  command line replaces the preset's whatever its unit.
  """
  given = [k for k in DURATIONS if k in overrides]
  if len(given) > 1:
    raise UserError(f'--config.total_steps and --config.num_epochs are both set: '
                    'expected one duration')
  for key in given:
    other, = (k for k in DURATIONS if k != key)
    config[other] = None
  for key, raw in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise UserError(f'--config.{key}: unknown config key {part!r}')
      node = node[part]
    if leaf not in node:
      raise UserError(f'--config.{key}: unknown config key; known keys here: '
                      f'{", ".join(sorted(node.keys()))}')
    value = parse_value(raw) if isinstance(raw, str) else raw
    kind = node.get_type(leaf)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if kind is str and not isinstance(value, str):
      value = str(raw)
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise UserError(f'--config.{key}={raw!r} is not allowed: expected {kind.__name__}'
                      ) from None


def parse_value(raw: str):
  """A command-line value as a Python literal where it is one, else the string."""
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def split_overrides(argv: list[str], prefix: str = '--config.'
                    ) -> tuple[list[str], dict[str, str]]:
  """Separates `--config.key=value` (or `--config.key value`) from other arguments."""
  rest, overrides = [], {}
  it = iter(argv)
  for arg in it:
    if arg.startswith(prefix):
      key, eq, value = arg[len(prefix):].partition('=')
      if not eq:
        value = next(it, None)
        if value is None:
          raise UserError(f'{prefix}{key} needs a value')
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides


# -- checks -------------------------------------------------------------------------


def _one_of(*allowed):
  return (lambda v: v in allowed), f'one of {", ".join(allowed)}'


def _number(lo=-math.inf, hi=math.inf, *, low_open=False, integer=False):
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
      return False
    if integer and v != int(v):
      return False
    return (v > lo if low_open else v >= lo) and v <= hi
  kind = 'an integer' if integer else 'a number'
  bound = f'> {lo}' if low_open else (f'>= {lo}' if lo > -math.inf else '')
  upper = f' and <= {hi}' if hi < math.inf else ''
  return ok, f'{kind} {bound}{upper}'.strip()


# Every field's allowed values, in one place: checked before a run writes anything.
# (config.spec.* is checked by the spec, the dataset name by the data package.)
SCHEMA = {
    'optimizer': _one_of(*OPTIMIZERS),
    'schedule': _one_of(*SCHEDULES),
    'dtype': _one_of(*DTYPES),
    'layers': _one_of(*LAYERS),
    'data_on_device': _one_of(*DATA_ON_DEVICE),
    'seed_axis': _one_of(*SEED_AXES),
    'cpu_convolutions': _one_of(*CPU_CONVOLUTIONS),
    'augment': _one_of(*data_core.AUGMENTATIONS),
    'compressed': _one_of('', 'pruned', 'shared'),
    'image_size': _number(0, integer=True),
    'batch_size': _number(1, integer=True),
    'eval_batch_size': _number(1, integer=True),
    'accum_steps': _number(1, integer=True),
    'batch_splits': _number(0, integer=True),
    'lr': _number(0, low_open=True),
    'warmup_steps': _number(0, integer=True),
    'momentum': _number(0, 1),
    'weight_decay': _number(0),
    'grad_clip': _number(0),
    'seed': _number(0, 2**31 - 1, integer=True),
    'num_seeds': _number(1, integer=True),
    'num_devices': _number(0, integer=True),
    'num_processes': _number(1, integer=True),
    'process_id': _number(0, integer=True),
    'log_every': _number(1, integer=True),
    'eval_every': _number(0, integer=True),
    'checkpoint_every': _number(1, integer=True),
    'keep_checkpoints': _number(1, integer=True),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Every value against its meaning (the SCHEMA); each failure is one line naming the key."""
  missing = sorted(set(base_config().keys()) - set(config.keys()))
  if missing:
    raise UserError(f'the config has no {", ".join(missing)}: start it from '
                    'squeezejax.configs.base_config()')

  def bad(key, allowed):
    raise UserError(f'config.{key}={config[key]!r} is not allowed: expected {allowed}')

  for key, (ok, allowed) in SCHEMA.items():
    if not ok(config[key]):
      bad(key, allowed)
  set_durations = [k for k in DURATIONS if config[k] is not None]
  if len(set_durations) != 1:
    raise UserError(f'the config sets {" and ".join(set_durations) or "no duration"}: '
                    'expected exactly one of config.total_steps and config.num_epochs')
  if config.total_steps is not None and config.total_steps < 1:
    bad('total_steps', 'an integer >= 1')
  if config.num_epochs is not None and not (math.isfinite(config.num_epochs)
                                            and config.num_epochs > 0):
    bad('num_epochs', 'a number > 0')
  if config.batch_size % config.accum_steps:
    bad('accum_steps', f'a divisor of batch_size={config.batch_size}')
  if config.num_seeds > 1 and config.init_from:
    bad('num_seeds', '1 when fine-tuning with init_from')
  if config.process_id >= config.num_processes:
    bad('process_id', f'0..{config.num_processes - 1} (num_processes={config.num_processes})')
  data_core.parse_name(config.dataset)
  if not config.init_from:  # the network, as far as it is known before the data is read
    spec_from_config(config)


def total_steps(config, num_train_examples: int) -> int:
  """The run's length in steps, from whichever duration the config sets."""
  if config.num_epochs is not None:
    return max(1, math.ceil(config.num_epochs * num_train_examples / config.batch_size))
  return config.total_steps


# -- config -> spec -------------------------------------------------------------------


def family(config, base=None) -> families.Family:
  """The family of the network a config trains: `base`'s, else config.model's."""
  return families.FAMILIES[base.family] if base is not None else families.family_of(config.model)


def spec_fields(config, base=None) -> dict[str, Any]:
  """The network's fields, unvalidated: `base` (else the config.model preset), with
  every set `config.spec.*` field on top (each must be a field of that family)."""
  if base is not None:
    fields = {k: v for k, v in base.to_dict().items() if k != 'family'}
  else:
    fields = families.preset_fields(config.model)
  given = {k: v for k, v in config.spec.items() if v is not None}
  families.check_fields(family(config, base), given, 'config.spec.')
  fields.update(given)
  return fields


def spec_from_config(config, *, num_classes: int | None = None, in_channels: int | None = None,
                     base=None):
  """The one place a config becomes a network: `spec_fields` plus the dataset's class
  and channel counts (None: the preset's). `base` is the spec of a model being fine-tuned."""
  fields = spec_fields(config, base)
  for key, value in zip(FROM_DATASET, (num_classes, in_channels)):
    if value is not None:
      fields[key] = value
  return family(config, base).spec(**fields)
