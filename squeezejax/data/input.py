"""The trainer's input: one `Input` per run, whether the dataset is held in memory or streamed.

Small datasets (fashion_mnist, cifar10, synthetic, folders) are held on the host
as uint8; each process gathers its rows of each global batch from a per-epoch
permutation seeded by (seed, epoch), so batch `step` is a pure function of
(seed, step), and the jitted step augments and normalises on the device
(`Preprocessing`). With `DeviceBatches` (config.data_on_device) the whole uint8
split stays on the devices and the jitted step gathers batch `step` itself from
the same permutation, so the loop sends nothing per step (one index table per
epoch). Large datasets (imagenette, imagenet2012) are streamed by each process
with tf.data (`pipeline`), already augmented and normalised.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Callable, Iterator

import jax
import numpy as np

from squeezejax import parallel
from squeezejax.data import arrays, core, describe as describe_lib
from squeezejax.data import pipeline
from squeezejax.data.augment import augment, preprocess
from squeezejax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a uint8 batch becomes the network's float input, inside the jitted step."""
  image_size: int
  mean: tuple[float, ...]  # per channel, [0, 1] pixel units
  std: tuple[float, ...]
  augment: str = 'none'  # training augmentation (core.AUGMENTATIONS)

  def train(self, images, key):
    return augment(images, key, kind=self.augment, image_size=self.image_size,
                   mean=self.mean, std=self.std)

  def eval(self, images):
    return preprocess(images, image_size=self.image_size, mean=self.mean, std=self.std)


@dataclasses.dataclass
class Input:
  """What the loop needs from a dataset."""
  num_train: int
  num_classes: int
  class_names: tuple[str, ...]
  channels: int
  preprocessing: Preprocessing
  train_batches: Callable[[int], Iterator[Batch]]  # from a start step
  eval_batches: Callable[[], Iterator[Batch]]  # padded, with a 0/1 'mask'


class InMemoryBatches:
  """Training batches of an in-memory split: this process's rows of each global batch."""

  def __init__(self, dataset: core.ArrayDataset, global_batch: int, seed: int):
    if len(dataset.labels) < global_batch:
      raise UserError(f'batch_size={global_batch} is larger than the training split '
                      f'({len(dataset.labels)} examples)')
    self.dataset = dataset
    self.global_batch = global_batch
    self.seed = seed
    self.steps_per_epoch = len(dataset.labels) // global_batch
    self.rows = parallel.process_slice(global_batch)
    self._epoch, self._index = -1, None

  def epoch_index(self, epoch: int) -> np.ndarray:
    """[steps_per_epoch, global_batch] int32: the rows of each global batch of `epoch`,
    from the permutation seeded by (seed, epoch)."""
    perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset.labels))
    # Sorted for cheaper gathers, before slicing so that row r of the global batch
    # (and so its augmentation key) is the same for any number of processes.
    index = perm[:self.steps_per_epoch * self.global_batch].reshape(self.steps_per_epoch, -1)
    return np.sort(index, axis=1).astype(np.int32)

  def batch(self, step: int) -> Batch:
    epoch, i = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._index, self._epoch = self.epoch_index(epoch), epoch
    index = self._index[i][self.rows]
    return {'image': self.dataset.images[index], 'label': self.dataset.labels[index]}

  def __call__(self, start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


class DeviceBatches:
  """An `InMemoryBatches` split held on the devices: the uint8 images and labels,
  replicated, put once; each epoch's `epoch_index` table, put once per epoch.

  `self(start_step)` yields the step's input (the same device arrays every step of
  an epoch) and `gather(data, step)`, inside the jitted step, picks global batch
  `step` from it: exactly the rows `InMemoryBatches.batch(step)` gives, sharded on
  'data' as `parallel.global_batch` shards them.
  """

  def __init__(self, host: InMemoryBatches, mesh):
    self.host, self.mesh = host, mesh
    self.replicated = parallel.replicated(mesh)
    self.split = {'image': self._put(host.dataset.images),
                  'label': self._put(host.dataset.labels.astype(np.int32))}

  def _put(self, array: np.ndarray) -> jax.Array:
    # Every process holds the whole split, so this also places it across hosts.
    return jax.device_put(array, self.replicated)

  def __call__(self, start_step: int) -> Iterator[dict[str, jax.Array]]:
    step, epoch, index = start_step, -1, None
    while True:
      if step // self.host.steps_per_epoch != epoch:
        epoch = step // self.host.steps_per_epoch
        index = self._put(self.host.epoch_index(epoch))
      yield {**self.split, 'index': index}
      step += 1

  def gather(self, data: dict[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    index = jax.lax.dynamic_index_in_dim(
        data['index'], step % self.host.steps_per_epoch, keepdims=False)
    batch = {'image': data['image'][index], 'label': data['label'][index]}
    return jax.lax.with_sharding_constraint(batch, parallel.batch_sharding(self.mesh))

  def wrap(self, train_step):
    """train_step(state, batch) -> train_step(state, data), gathering inside."""
    return lambda state, data: train_step(state, self.gather(data, state['step']))


# 'auto' keeps a split on the devices only if it is small (Fashion-MNIST: 47 MB,
# CIFAR-10: 154 MB); an image folder can be far larger.
AUTO_ON_DEVICE_MAX_BYTES = 1 << 30


def on_device(config, source: Input, mesh) -> DeviceBatches | None:
  """config.data_on_device: the run's `DeviceBatches`, or None for the host path."""
  host = source.train_batches
  in_memory = isinstance(host, InMemoryBatches)
  if config.data_on_device == 'on' and not in_memory:
    raise UserError(f'data_on_device=\'on\' is not allowed for dataset={config.dataset!r}, '
                    'which is streamed: expected an in-memory dataset, or \'auto\' / \'off\'')
  if config.data_on_device == 'off' or not in_memory:
    return None
  if config.data_on_device == 'auto' and (
      jax.default_backend() == 'cpu' or host.dataset.images.nbytes > AUTO_ON_DEVICE_MAX_BYTES):
    return None
  return DeviceBatches(host, mesh)


def padded_batches(arrays_: dict[str, np.ndarray], global_batch: int) -> Iterator[Batch]:
  """Fixed-size batches covering the rows exactly once (so one compiled shape); the
  last is padded with copies of the last row and `mask` 0. Each process gets its rows."""
  n = len(next(iter(arrays_.values())))
  rows = parallel.process_slice(global_batch)
  for start in range(0, n, global_batch):
    index = np.arange(start, start + global_batch)
    mask = (index < n).astype(np.float32)
    index = np.minimum(index, n - 1)[rows]
    yield {**{k: v[index] for k, v in arrays_.items()}, 'mask': mask[rows]}


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs the host side of the input pipeline `size` batches ahead, on a thread.
  An error there is raised here; closing or dropping the returned generator ends
  the thread (a sweep process runs many of them)."""
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    try:
      for item in iterator:
        if not put((True, item)):
          return
      put((False, None))
    except Exception as e:  # raised again by the consumer
      put((False, e))

  threading.Thread(target=work, daemon=True, name='squeezejax-prefetch').start()
  try:
    while True:
      more, item = q.get()
      if not more:
        if item is not None:
          raise item
        return
      yield item
  finally:
    stop.set()


def make_input(config, placeholder: bool = False) -> Input:
  """The run's `Input` from the config's dataset, splits, image size and batch sizes.
  placeholder: TFDS's in-memory datasets as zeros of their exact shapes
  (arrays.placeholder), for compiling a run without reading its data."""
  data_dir = config.data_dir or None
  if core.is_in_memory(config.dataset):
    size = config.image_size or None

    def load(split):
      fake = arrays.placeholder(config.dataset, split, size) if placeholder else None
      return fake if fake is not None else arrays.load_arrays(
          config.dataset, split, data_dir=data_dir, image_size=size)
    train, test = load(config.train_split), load(config.eval_split)
    prep = Preprocessing(config.image_size or train.images.shape[1], train.mean, train.std,
                         config.augment)
    return Input(len(train.labels), train.num_classes, train.class_names,
                 train.images.shape[-1], prep,
                 InMemoryBatches(train, config.batch_size, config.seed),
                 lambda: padded_batches({'image': test.images, 'label': test.labels},
                                        config.eval_batch_size))
  summary = describe_lib.describe(config.dataset, data_dir=data_dir)
  core.check_split(config.dataset, config.train_split, tuple(summary.split_sizes))
  image_size = core.resolve_image_size(config.dataset, config.image_size or None,
                                       config.augment)
  where = dict(data_dir=data_dir, image_size=image_size, process_index=jax.process_index(),
               process_count=jax.process_count())
  return Input(
      summary.split_sizes[config.train_split], summary.num_classes, summary.class_names,
      summary.channels, Preprocessing(image_size, summary.mean, summary.std, config.augment),
      lambda start: pipeline.train_stream(
          config.dataset, config.train_split, global_batch=config.batch_size,
          augment=config.augment, seed=config.seed, start_step=start, **where),
      lambda: pipeline.eval_stream(config.dataset, config.eval_split,
                                   global_batch=config.eval_batch_size, **where)[1])
