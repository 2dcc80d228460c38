"""The trainer: one config, one workdir, read top to bottom.

  squeezejax train --config=experiments/fashion_mnist.py:quick --workdir=runs/fmnist

Sections: config -> logging -> mesh -> input -> model and optimizer -> state
(created in its shardings) -> update step -> evaluation -> checkpoints ->
loop -> result. `train_and_evaluate(config, workdir)` is what the CLI, sweeps
and tests call. A rerun with the same workdir resumes from the newest
checkpoint; the data order, augmentation and dropout are pure functions of
(seed, step), so a resumed run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from squeezejax import checkpoint as checkpoint_lib
from squeezejax import configs, data, flags, parallel
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

OPTIMIZERS = ('sgd', 'adamw')
SCHEDULES = ('linear', 'cosine', 'constant')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class Diverged(UserError):
  """The loss became NaN or infinite: a configuration problem, not a bug."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

  def __init__(self, step: int):
    super().__init__(f'preempted at step {step}; checkpoint saved, rerun to resume')
    self.step = step


# ===================================================================================
# Config
# ===================================================================================


def check_config(config: ml_collections.ConfigDict) -> None:
  """Values the config schema cannot check by type alone."""
  def bad(key, allowed):
    raise configs.ConfigError(f'config.{key}={config[key]!r} is not allowed: expected {allowed}')

  if config.optimizer not in OPTIMIZERS:
    bad('optimizer', f'one of {", ".join(OPTIMIZERS)}')
  if config.schedule not in SCHEDULES:
    bad('schedule', f'one of {", ".join(SCHEDULES)}')
  if config.dtype not in DTYPES:
    bad('dtype', f'one of {", ".join(DTYPES)}')
  if config.total_steps < 1 and config.num_epochs <= 0:
    bad('total_steps', 'an integer >= 1 (or num_epochs > 0)')
  if config.accum_steps < 1 or config.batch_size % config.accum_steps:
    bad('accum_steps', f'a divisor of batch_size={config.batch_size}')
  if not config.lr > 0:
    bad('lr', 'a number > 0')
  for key in ('log_every', 'checkpoint_every', 'keep_checkpoints'):
    if config[key] < 1:
      bad(key, 'an integer >= 1')
  if config.num_seeds < 1 or (config.num_seeds > 1 and config.init_from):
    bad('num_seeds', 'an integer >= 1 (1 when fine-tuning with init_from)')
  if config.eval_every < 0:
    bad('eval_every', 'an integer >= 0 (0 = only at the end)')
  if config.cpu_convolutions not in parallel.CPU_CONVOLUTIONS:
    bad('cpu_convolutions', f'one of {", ".join(parallel.CPU_CONVOLUTIONS)}')


def make_spec(config, num_classes: int, in_channels: int) -> spec_lib.SqueezeNetSpec:
  """The network: config.model + config.spec, or the spec of config.init_from."""
  overrides = dict(config.spec)
  if config.init_from:
    spec, _ = checkpoint_lib.read_model_json(config.init_from)
    keep = {k: overrides[k] for k in ('dropout_rate', 'conv10_relu') if k in overrides}
    return spec_lib.SqueezeNetSpec(**{**spec.to_dict(), **keep, 'num_classes': num_classes})
  return spec_lib.preset(config.model, num_classes=num_classes, in_channels=in_channels,
                         **overrides)


def total_steps(config, num_train_examples: int) -> int:
  """Durations are given once: num_epochs (when > 0) wins over total_steps."""
  if config.num_epochs > 0:
    return max(1, int(math.ceil(config.num_epochs * num_train_examples / config.batch_size)))
  return config.total_steps


# ===================================================================================
# Logging
# ===================================================================================


class MetricWriter:
  """metrics.jsonl and TensorBoard events, written by process 0 only."""

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard = None
    if self.enabled and os.path.exists(self.path):
      # A resumed run redoes the steps after its checkpoint: drop their old lines so
      # the file reads as if the run had never stopped.
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= start_step]
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(kept)
      os.replace(self.path + '.tmp', self.path)
    if self.enabled:
      try:
        from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
        self.tensorboard = tensorboard.SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # TensorBoard is optional: metrics.jsonl is always written.
        logging.warning('TensorBoard unavailable; writing metrics.jsonl only')

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **metrics}) + '\n')
    if self.tensorboard is not None:
      for k, v in metrics.items():
        if isinstance(v, dict):  # per-seed lists
          for name, values in v.items():
            for i, x in enumerate(values):
              self.tensorboard.scalar(f'{name}/seed_{i}', x, step)
        elif isinstance(v, list):
          for i, x in enumerate(v):
            self.tensorboard.scalar(f'{k}/seed_{i}', x, step)
        else:
          self.tensorboard.scalar(k, v, step)
      self.tensorboard.flush()

  def close(self):
    if self.tensorboard is not None:
      self.tensorboard.close()


def say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


# ===================================================================================
# Input
# ===================================================================================


class InMemoryInput:
  """A small dataset held on the host; each process gathers its rows of each batch.

  The order is an epoch permutation seeded by (seed, epoch), so batch `step` is
  a pure function of (seed, step). Images stay uint8 until the jitted step
  augments and normalises them on the device.
  """

  def __init__(self, dataset: data.ArrayDataset, global_batch: int, seed: int):
    if len(dataset.labels) < global_batch:
      raise UserError(f'batch_size={global_batch} is larger than the training split '
                      f'({len(dataset.labels)} examples)')
    self.dataset = dataset
    self.global_batch = global_batch
    self.seed = seed
    self.steps_per_epoch = len(dataset.labels) // global_batch
    self.rows = parallel.process_slice(global_batch)
    self._perm_epoch, self._perm = -1, None

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(step, self.steps_per_epoch)
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm, self._perm_epoch = rng.permutation(len(self.dataset.labels)), epoch
    # Sorted for cheaper gathers, before slicing so that row r of the global batch
    # (and so its augmentation key) is the same for any number of processes.
    index = np.sort(self._perm[i * self.global_batch:(i + 1) * self.global_batch])[self.rows]
    return {'image': self.dataset.images[index], 'label': self.dataset.labels[index]}

  def batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


def in_memory_eval_batches(dataset: data.ArrayDataset, global_batch: int):
  """Fixed-size batches covering the split exactly once; padding rows have mask 0."""
  n = len(dataset.labels)
  rows = parallel.process_slice(global_batch)
  for start in range(0, n, global_batch):
    index = np.arange(start, start + global_batch)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)[rows]
    yield {'image': dataset.images[index], 'label': dataset.labels[index],
           'mask': mask[rows]}


def prefetch(iterator, size: int = 2):
  """Runs the host side of the input pipeline one or two batches ahead."""
  import queue  # pylint: disable=g-import-not-at-top
  q: queue.Queue = queue.Queue(maxsize=size)
  sentinel = object()

  def work():
    try:
      for item in iterator:
        q.put(item)
    finally:
      q.put(sentinel)

  threading.Thread(target=work, daemon=True).start()
  while (item := q.get()) is not sentinel:
    yield item


@dataclasses.dataclass
class Input:
  """What the loop needs from a dataset, whether held in memory or streamed."""
  num_train: int
  num_classes: int
  class_names: tuple[str, ...]
  channels: int
  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_batches: Callable[[int], Iterator[dict[str, np.ndarray]]]  # from a start step
  eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]


def make_input(config) -> Input:
  """Small datasets are held on the host (uint8, augmented on device); large ones
  (imagenette, imagenet2012) are streamed with tf.data by each process."""
  data_dir = config.data_dir or None
  if data.is_in_memory(config.dataset):
    size = config.image_size or None
    train = data.load_arrays(config.dataset, config.train_split, data_dir=data_dir, image_size=size)
    test = data.load_arrays(config.dataset, config.eval_split, data_dir=data_dir, image_size=size)
    source = InMemoryInput(train, config.batch_size, config.seed)
    return Input(len(train.labels), train.num_classes, train.class_names, train.images.shape[-1],
                 config.image_size or train.images.shape[1], train.mean, train.std,
                 source.batches, lambda: in_memory_eval_batches(test, config.eval_batch_size))
  summary = data.describe(config.dataset, data_dir=data_dir)
  if config.train_split not in summary.split_sizes:
    raise data.DataError(f'train_split={config.train_split!r} is not a split of '
                         f'{config.dataset}: expected one of {", ".join(summary.split_sizes)}')
  image_size = data.resolve_image_size(config.dataset, config.image_size or None, config.augment)
  where = dict(data_dir=data_dir, image_size=image_size, process_index=jax.process_index(),
               process_count=jax.process_count())
  return Input(
      summary.split_sizes[config.train_split], summary.num_classes, summary.class_names,
      summary.channels, image_size, summary.mean, summary.std,
      lambda start: data.train_stream(config.dataset, config.train_split,
                                      global_batch=config.batch_size, augment=config.augment,
                                      seed=config.seed, start_step=start, **where),
      lambda: data.eval_stream(config.dataset, config.eval_split,
                               global_batch=config.eval_batch_size, **where)[1])


# ===================================================================================
# Model and optimizer
# ===================================================================================


def make_schedule(config, steps: int) -> optax.Schedule:
  warmup = min(config.warmup_steps, steps - 1)
  decay_steps = max(1, steps - warmup)
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(config.lr, decay_steps)
  elif config.schedule == 'linear':  # the paper: linear decay to 0 ("poly", power 1)
    main = optax.linear_schedule(config.lr, 0.0, decay_steps)
  else:
    main = optax.constant_schedule(config.lr)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), main], [warmup])


def make_optimizer(config, schedule, abstract_params) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  if config.optimizer == 'sgd':
    # Caffe's weight_decay is L2 added to the gradient, biases included.
    parts += [optax.add_decayed_weights(config.weight_decay),
              optax.sgd(schedule, momentum=config.momentum)]
  else:
    parts += [optax.adamw(schedule, b1=config.momentum, weight_decay=config.weight_decay)]
  tx = optax.chain(*parts)
  if config.freeze_backbone:
    labels = {k: jax.tree.map(lambda _, k=k: 'train' if k == 'conv10' else 'frozen', v)
              for k, v in abstract_params.items()}
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx


# ===================================================================================
# Update step and evaluation (pure functions of pytrees)
# ===================================================================================


def batch_splits(config, mesh) -> int:
  """config.batch_splits, checked, with 0 resolved: 4 where one CPU device has
  the whole machine (and 4 divides its micro-batch), else 1. With a device per
  core (parallel.configure_host) the devices already keep the cores busy."""
  per_device = config.batch_size // config.accum_steps // mesh.size
  if config.batch_splits:
    if config.batch_splits < 0 or per_device % config.batch_splits:
      raise configs.ConfigError(
          f'config.batch_splits={config.batch_splits} is not allowed: expected 0 (automatic) '
          f'or a divisor of the {per_device} images per device and micro-batch')
    return config.batch_splits
  single_cpu = jax.default_backend() == 'cpu' and mesh.size == 1
  return 4 if single_cpu and per_device % 4 == 0 else 1


def _split(x: jax.Array, k: int) -> jax.Array:
  """[batch, ...] -> [k, batch / k, ...]; part j is rows j, j + k, ..., so that
  every device keeps its own rows."""
  return jnp.swapaxes(x.reshape(-1, k, *x.shape[1:]), 0, 1)


def make_train_step(graphdef, tx, spec: spec_lib.SqueezeNetSpec, config, image_info,
                    splits: int = 1):
  """(state, batch) -> (state, metrics); batch images are uint8 (augmented here) or float.

  With config.num_seeds > 1 the state holds that many networks (a leading seed
  axis), initialised from seeds seed, seed+1, ...: one vmapped step trains them
  all on the same batches, each with its own augmentation and dropout.

  `splits` (see `batch_splits`) computes the gradient of each micro-batch as the
  mean over that many independent sub-batches: the same gradient up to float
  rounding, but XLA:CPU runs the sub-batches' single-threaded kernels side by
  side on different cores (docs/performance.md).
  """
  accum = config.accum_steps
  kind, image_size, mean, std = image_info

  def loss_fn(params, images, labels, dropout_key):
    logits = nnx.merge(graphdef, params)(images, dropout_key=dropout_key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits.argmax(-1) == labels).mean()

  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def grad_fn(params, images, labels, dropout_key):
    """((loss, top1), grads), each the mean over `splits` sub-batches."""
    if splits == 1:
      return value_and_grad(params, images, labels, dropout_key)
    images, labels = _split(images, splits), _split(labels, splits)
    parts = [value_and_grad(params, images[j], labels[j], jax.random.fold_in(dropout_key, j))
             for j in range(splits)]
    return jax.tree.map(lambda *xs: sum(xs) / splits, *parts)

  def update(params, opt_state, step, batch, seed):
    key = jax.random.fold_in(jax.random.key(seed), step)
    augment_key, dropout_key = jax.random.split(key)
    images, labels = batch['image'], batch['label']
    if images.dtype == jnp.uint8:
      images = data.augment(images, augment_key, kind=kind, image_size=image_size,
                            mean=mean, std=std)
    if accum == 1:
      (loss, top1), grads = grad_fn(params, images, labels, dropout_key)
    else:
      def micro(carry, xs):
        imgs, lbls, j = xs
        (l, a), g = grad_fn(params, imgs, lbls, jax.random.fold_in(dropout_key, j))
        return jax.tree.map(jnp.add, carry, (l, a, g)), None

      zeros = (0.0, 0.0, jax.tree.map(jnp.zeros_like, params))
      (loss, top1, grads), _ = jax.lax.scan(
          micro, zeros, (_split(images, accum), _split(labels, accum), jnp.arange(accum)))
      loss, top1, grads = jax.tree.map(lambda x: x / accum, (loss, top1, grads))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {'loss': loss, 'top1': top1, 'grad_norm': optax.tree.norm(grads)}

  def train_step(state, batch):
    if config.num_seeds == 1:
      params, opt_state, metrics = update(
          state['params'], state['opt_state'], state['step'], batch, config.seed)
    else:
      seeds = config.seed + jnp.arange(config.num_seeds)
      params, opt_state, metrics = jax.vmap(update, in_axes=(0, 0, None, None, 0))(
          state['params'], state['opt_state'], state['step'], batch, seeds)
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics

  return train_step


def make_eval_step(graphdef, image_info, num_seeds: int = 1):
  """(params, batch) -> sums of (loss, correct top-1, correct top-5, count) over valid rows
  (per seed, vmapped, when the parameters carry a seed axis)."""
  _, image_size, mean, std = image_info

  def eval_step(params, batch):
    images = batch['image']
    if images.dtype == jnp.uint8:
      images = data.preprocess(images, image_size=image_size, mean=mean, std=std)
    logits = nnx.merge(graphdef, params)(images)
    labels, mask = batch['label'], batch['mask']
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = min(5, logits.shape[-1])
    top5 = (jax.lax.top_k(logits, k)[1] == labels[:, None]).any(-1)
    return {'loss': (loss * mask).sum(), 'top1': ((logits.argmax(-1) == labels) * mask).sum(),
            'top5': (top5 * mask).sum(), 'count': mask.sum()}

  return eval_step if num_seeds == 1 else jax.vmap(eval_step, in_axes=(0, None))


def evaluate(eval_step, params, batches, mesh) -> dict[str, float]:
  """Exact metrics over a split: padded batches, masked, summed on device."""
  totals = None
  for batch in batches:
    sums = eval_step(params, parallel.global_batch(mesh, batch))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(totals))
  per_seed = {'eval_loss': totals['loss'] / totals['count'],
              'top1': totals['top1'] / totals['count'], 'top5': totals['top5'] / totals['count']}
  metrics = {k: float(np.mean(v)) for k, v in per_seed.items()}
  metrics['eval_examples'] = int(np.ravel(totals['count'])[0])
  if np.ndim(totals['count']):  # several seeds: means above, each seed here
    metrics['per_seed'] = {k: v.tolist() for k, v in per_seed.items()}
  return metrics


# ===================================================================================
# The loop
# ===================================================================================


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from workdir), evaluates, writes and returns result.json's dict."""
  t_start = time.time()
  check_config(config)
  parallel.initialize_distributed(config.coordinator_address, config.num_processes,
                                  config.process_id)
  _check_workdir(workdir)

  # -- mesh ---------------------------------------------------------------------------
  mesh = parallel.make_mesh(config.num_devices)
  per_process, per_device = parallel.check_batch(mesh, config.batch_size)
  parallel.check_batch(mesh, config.eval_batch_size, 'eval_batch_size')
  splits = batch_splits(config, mesh)
  say(f'devices: {mesh.size} x {jax.devices()[0].device_kind} over '
      f'{jax.process_count()} process(es); batch {config.batch_size} global, '
      f'{per_process} per process, {per_device} per device'
      + (f', {config.batch_size // config.accum_steps} per micro-batch' if config.accum_steps > 1 else '')
      + (f', gradients over {splits} sub-batches' if splits > 1 else ''))

  # -- input --------------------------------------------------------------------------
  source = make_input(config)
  image_size = source.image_size
  image_info = (config.augment, image_size, source.mean, source.std)
  steps = total_steps(config, source.num_train)
  steps_per_epoch = source.num_train // config.batch_size

  # -- model and optimizer ------------------------------------------------------------
  spec = make_spec(config, source.num_classes, source.channels)
  spec.check_image_size(image_size)
  cost = spec.cost(image_size)
  dtype = DTYPES[config.dtype]
  abstract_model = nnx.eval_shape(lambda: model_lib.create(spec, dtype=dtype))
  graphdef, abstract_params = nnx.split(abstract_model)
  abstract_params = nnx.to_pure_dict(abstract_params)
  schedule = make_schedule(config, steps)
  tx = make_optimizer(config, schedule, abstract_params)
  say(f'model: {spec.layout} {cost["params"]:,} parameters ({cost["size_mib"]:.2f} MiB), '
      f'{cost["macs"] / 1e6:.1f} MMACs at {image_size}px; {steps} steps '
      f'({steps / steps_per_epoch:.2f} epochs)')

  # -- state, created directly in its shardings -----------------------------------------
  def init_one(seed):
    params = nnx.to_pure_dict(nnx.state(model_lib.create(spec, seed=seed), nnx.Param))
    return params, tx.init(params)

  def init_state():
    if config.num_seeds == 1:
      params, opt_state = init_one(config.seed)
    else:
      keys = jax.vmap(jax.random.key)(config.seed + jnp.arange(config.num_seeds))
      params, opt_state = jax.vmap(init_one)(keys)
    return {'params': params, 'opt_state': opt_state, 'step': jnp.int32(0)}

  abstract_state = jax.eval_shape(init_state)
  shardings = parallel.state_shardings(mesh, abstract_state, config.fsdp)
  shardings['step'] = parallel.replicated(mesh)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)

  # -- checkpoints: resume first ----------------------------------------------------------
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep=config.keep_checkpoints)
  restored = checkpointer.restore_latest(abstract_state['params'], abstract_state['opt_state'])
  window = _empty_window(config.num_seeds)
  if restored is not None:
    start_step, params, opt_state, meta = restored
    state = {'params': params, 'opt_state': opt_state,
             'step': jax.device_put(jnp.int32(start_step), shardings['step'])}
    if 'window' in meta:
      window = _accumulate(window, meta['window'], meta['window']['count'])
    say(f'resumed from step {start_step} in {workdir}')
  else:
    start_step = 0
    state = jax.jit(init_state, out_shardings=shardings)()
    if config.init_from:
      state = _init_from(config.init_from, state, tx, shardings, mesh)
  checkpoint_lib.write_model_json(workdir, spec, {
      'preprocessing': {'kind': 'dataset', 'mean': list(source.mean),
                        'std': list(source.std), 'image_size': image_size},
      'class_names': list(source.class_names), 'dataset': config.dataset})

  # -- compiled functions ---------------------------------------------------------------
  batch_shardings = parallel.batch_sharding(mesh)
  options = parallel.compiler_options(config.cpu_convolutions)
  train_step = jax.jit(
      make_train_step(graphdef, tx, spec, config, image_info, splits),
      in_shardings=(shardings, batch_shardings),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0,
      compiler_options=options)
  eval_step = jax.jit(make_eval_step(graphdef, image_info, config.num_seeds),
                      in_shardings=(shardings['params'], batch_shardings),
                      out_shardings=parallel.replicated(mesh), compiler_options=options)
  run_eval = lambda params: evaluate(
      eval_step, params, source.eval_batches(), mesh)

  # -- loop -----------------------------------------------------------------------------
  writer = MetricWriter(workdir, start_step)
  stall_warned = False
  last_metrics: dict[str, float] = {}
  img_s_history = []
  t_window, step_window = time.time(), start_step
  sums = None
  batches = prefetch(source.train_batches(start_step))
  step = start_step
  with jax.set_mesh(mesh), _sigterm_sets_event() as preempted:
    for step in range(start_step + 1, steps + 1):
      batch = parallel.global_batch(mesh, next(batches))
      state, metrics = train_step(state, batch)
      sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)

      if step % config.log_every == 0 or step == steps:
        # The only host sync: once per log_every steps.
        window = _accumulate(window, jax.device_get(sums), step - step_window)
        sums = None
        now = time.time()
        img_s = (step - step_window) * config.batch_size / (now - t_window)
        if step_window > start_step:  # the first window includes compilation
          img_s_history.append(img_s)
        losses = window['loss'] / window['count']  # one per seed
        loss = float(np.mean(losses))
        if not np.isfinite(losses).all():
          raise Diverged(f'loss is {loss} at step {step} (lr={float(schedule(step)):.3g}): '
                         'lower --config.lr or set --config.grad_clip')
        last_metrics = {'loss': loss, 'train_top1': float(np.mean(window['top1'])) / window['count'],
                        'lr': float(schedule(step)), 'img_s': img_s}
        if config.num_seeds > 1:
          last_metrics['loss_per_seed'] = losses.tolist()
        stall_warned = _warn_if_stalled(loss, spec.num_classes, step, steps, stall_warned)
        eta = (steps - step) * (now - t_window) / (step - step_window)
        say(f'step {step}/{steps} loss {loss:.4f} train_top1 {last_metrics["train_top1"]:.3f} '
            f'lr {last_metrics["lr"]:.3g} {img_s:,.0f} img/s ETA {format_duration(eta)}')
        writer.write(step, last_metrics)
        window = _empty_window(config.num_seeds)
        t_window, step_window = time.time(), step

      if config.eval_every and step % config.eval_every == 0 and step != steps:
        metrics_eval = run_eval(state['params'])
        say(f'  eval at step {step}: top1 {metrics_eval["top1"]:.4f} '
            f'top5 {metrics_eval["top5"]:.4f}')
        writer.write(step, metrics_eval)
        t_window = time.time()  # evaluation time is not training throughput

      if step % config.checkpoint_every == 0 or step == steps or preempted.is_set():
        # Keep the partial log window so that a resumed run logs identically.
        saved = window if sums is None else _accumulate(
            window, jax.device_get(sums), step - step_window)
        saved = {'loss': saved['loss'].tolist(), 'top1': saved['top1'].tolist(),
                 'count': saved['count']}
        checkpointer.save(step, state['params'], state['opt_state'],
                          {'step': step, 'seed': config.seed, 'window': saved})
        if preempted.is_set():
          checkpointer.close()
          writer.close()
          raise Preempted(step)

    # -- evaluation and result ------------------------------------------------------------
    checkpointer.wait()
    final = run_eval(state['params'])
  checkpointer.close()
  say(f'eval on {config.eval_split} ({final["eval_examples"]:,} images): '
      f'top1 {final["top1"]:.4f} top5 {final["top5"]:.4f}')
  writer.write(steps, final)
  writer.close()

  per_seed = final.pop('per_seed', None)
  result = {
      'config': config.to_dict(), 'spec': spec.to_dict(), **cost,
      'steps': steps, 'final_train_loss': last_metrics.get('loss'), **final,
      'train_img_s': float(np.median(img_s_history)) if img_s_history else None,
      'wall_s': time.time() - t_start, **environment()}
  if per_seed is not None:  # vmapped seeds: the means above, each seed here
    result['per_seed'] = [
        {'seed': config.seed + i, 'final_train_loss': last_metrics['loss_per_seed'][i],
         **{k: v[i] for k, v in per_seed.items()}} for i in range(config.num_seeds)]
  if jax.process_index() == 0:
    path = os.path.join(workdir, 'result.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(result, f, indent=1)
    os.replace(path + '.tmp', path)  # atomic: a reader sees all of it or nothing
  return result


def _empty_window(num_seeds: int) -> dict[str, Any]:
  return {'loss': np.zeros(num_seeds), 'top1': np.zeros(num_seeds), 'count': 0}


def _accumulate(window, sums, count: int) -> dict[str, Any]:
  """Adds per-seed loss/top-1 sums (device values or saved lists) to a log window."""
  add = lambda key: window[key] + np.asarray(sums[key], np.float64).reshape(-1)
  return {'loss': add('loss'), 'top1': add('top1'), 'count': window['count'] + count}


def _init_from(directory, state, tx, shardings, mesh):
  """Loads pretrained parameters; conv10 is kept fresh when its shape differs."""
  loaded_spec, _ = checkpoint_lib.read_model_json(directory)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)),
      checkpoint_lib.abstract_model_params(loaded_spec))
  _, loaded, _ = checkpoint_lib.load_model(directory, abstract)
  params = dict(state['params'])
  for name in params:
    same = jax.tree.map(lambda a, b: a.shape == b.shape, loaded[name], params[name])
    if all(jax.tree.leaves(same)):
      params[name] = jax.tree.map(jax.device_put, loaded[name], shardings['params'][name])
    else:
      say(f'init_from: {name} shapes differ ({directory}); keeping it freshly initialised')
  opt_state = jax.jit(tx.init, out_shardings=shardings['opt_state'])(params)
  return {'params': params, 'opt_state': opt_state, 'step': state['step']}


def _warn_if_stalled(loss, num_classes, step, steps, warned) -> bool:
  chance = math.log(num_classes)
  if not warned and step >= max(100, steps // 10) and abs(loss - chance) < 0.02 * chance:
    logging.warning(
        'loss %.4f has stayed at ln(num_classes) = %.4f by step %d: the classic stalled '
        'SqueezeNet. Check the learning rate, the batch size, conv10 init N(0, 0.01), and '
        'the ReLU after conv10 (--config.spec.conv10_relu=False lets dead classes recover)',
        loss, chance, step)
    return True
  return warned


@contextlib.contextmanager
def _sigterm_sets_event():
  """SIGTERM (preemption) sets an event the loop checks; the old handler is restored."""
  event = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield event
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
  try:
    yield event
  finally:
    signal.signal(signal.SIGTERM, previous)


def _check_workdir(workdir: str) -> None:
  if not workdir:
    raise UserError('--workdir is required')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir={workdir!r} is not writable: {e.strerror}') from None


def environment() -> dict[str, Any]:
  """Versions, devices and the git commit, for result.json."""
  import flax, optax as optax_mod, orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top,g-multiple-import
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__), timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    commit = None
  return {
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   'flax': flax.__version__, 'optax': optax_mod.__version__,
                   'orbax_checkpoint': ocp.__version__},
      'device_kind': jax.devices()[0].device_kind, 'device_count': jax.device_count(),
      'process_count': jax.process_count(), 'git_commit': commit,
  }


# ===================================================================================
# Command line
# ===================================================================================


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = flags.ArgumentParser(prog='squeezejax train', description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='path/to/config.py[:preset]')
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args(argv)
  config = configs.load(args.config, overrides)
  try:
    train_and_evaluate(config, args.workdir)
  except Preempted as e:
    print(f'squeezejax train: {e}', file=sys.stderr)
    return 143
  return 0


def eval_main(argv: list[str]) -> int:
  """`squeezejax eval`: re-evaluate the newest checkpoint of a training workdir."""
  argv, overrides = configs.split_overrides(argv)
  parser = flags.ArgumentParser(prog='squeezejax eval')
  parser.add_argument('--config', required=True)
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args(argv)
  config = configs.load(args.config, overrides)
  if not os.path.isdir(os.path.join(args.workdir, 'checkpoints')):
    raise UserError(f'workdir={args.workdir!r} has no checkpoints to evaluate')
  spec, params, _ = checkpoint_lib.load_model(args.workdir)
  source = make_input(config)
  image_info = (config.augment, source.image_size, source.mean, source.std)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.create(spec)))
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch(mesh, config.eval_batch_size, 'eval_batch_size')
  eval_step = jax.jit(make_eval_step(graphdef, image_info),
                      compiler_options=parallel.compiler_options(config.cpu_convolutions))
  with jax.set_mesh(mesh):
    metrics = evaluate(eval_step, params, source.eval_batches(), mesh)
  print(json.dumps(metrics))
  return 0
