"""The trainer's input: one `Input` per run, whether the dataset is held in memory or streamed.

Small datasets (fashion_mnist, cifar10, synthetic, folders) are held on the host
as uint8; each process gathers its rows of each global batch from a per-epoch
permutation seeded by (seed, epoch), so batch `step` is a pure function of
(seed, step), and the jitted step augments and normalises on the device
(`Preprocessing`). Large datasets (imagenette, imagenet2012) are streamed by
each process with tf.data (`pipeline`), already augmented and normalised.
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
    self._perm_epoch, self._perm = -1, None

  def batch(self, step: int) -> Batch:
    epoch, i = divmod(step, self.steps_per_epoch)
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm, self._perm_epoch = rng.permutation(len(self.dataset.labels)), epoch
    # Sorted for cheaper gathers, before slicing so that row r of the global batch
    # (and so its augmentation key) is the same for any number of processes.
    index = np.sort(self._perm[i * self.global_batch:(i + 1) * self.global_batch])[self.rows]
    return {'image': self.dataset.images[index], 'label': self.dataset.labels[index]}

  def __call__(self, start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      yield self.batch(step)
      step += 1


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
  """Runs the host side of the input pipeline one or two batches ahead."""
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


def make_input(config) -> Input:
  """The run's `Input` from the config's dataset, splits, image size and batch sizes."""
  data_dir = config.data_dir or None
  if core.is_in_memory(config.dataset):
    size = config.image_size or None
    train = arrays.load_arrays(config.dataset, config.train_split, data_dir=data_dir,
                               image_size=size)
    test = arrays.load_arrays(config.dataset, config.eval_split, data_dir=data_dir,
                              image_size=size)
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
