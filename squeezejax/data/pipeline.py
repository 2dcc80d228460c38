"""tf.data streams for datasets too large for device memory (and any other).

`train_stream` yields this process's slice of each global batch, forever:

  * Sharding: the split is cut into `process_count` equal contiguous ranges
    (remainder dropped), one per process (TFDS split slicing, so a host reads
    only its own files).
  * Order: epoch e of process p is its range shuffled with a seed made from
    (seed, e, p): TFDS file order (ReadConfig.shuffle_seed) then a shuffle buffer
    (the whole range for in-memory data). An epoch is floor(range / local batch)
    batches. Random augmentation uses stateless ops seeded by (seed, e, p, the
    example's position in the epoch).
  * Resume: global step s is batch s mod steps_per_epoch of epoch
    s // steps_per_epoch, so `start_step` rebuilds that epoch and skips the
    earlier examples *before* decoding (raw records only). The batches are then
    exactly those an uninterrupted run sees, for the same process count.

`eval_stream` gives every process the same number of equal-sized batches; the
last ones are padded with zero images, label 0 and mask 0, so that summing
mask-weighted metrics over all processes counts every example exactly once.

Normalisation is (x / 255 - mean) / std with the dataset's mean/std (ImageNet's
for photographs) for every augmentation, so training and evaluation agree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import numpy as np

from squeezejax.data import arrays, core
from squeezejax.data.augment import CAFFE_RESIZE, INCEPTION_AREA, INCEPTION_RATIO, PAD
from squeezejax.errors import UserError

SHUFFLE_BUFFER = 10_000  # examples (raw JPEG bytes, ~1 GiB for ImageNet) per process


# -- sources: a split as a tf.data of raw examples + how to decode one -------------


@dataclasses.dataclass
class Source:
  num_examples: int
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  eval_crop: float
  # (start, stop, file_shuffle_seed or None) -> tf.data of (raw, label int32).
  read: Callable[[int, int, int | None], Any]
  decode: Callable[[Any], Any]  # raw -> uint8 [h, w, c]
  in_memory: bool


def open_source(name: str, split: str, data_dir: str | None,
                image_size: int | None = None) -> Source:
  tf = core.tensorflow()
  base, config = core.parse_name(name)
  f = core.facts(name)
  if f.in_memory:
    ds = arrays.load_arrays(name, split, data_dir=data_dir, image_size=image_size or None)
    images, labels = ds.images, ds.labels

    def read(start, stop, seed):
      del seed
      return tf.data.Dataset.from_tensor_slices((images[start:stop], labels[start:stop]))

    return Source(len(labels), images.shape[-1], ds.mean, ds.std, 1.0, read, lambda x: x, True)

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  core.check_split(name, split)
  tfds_name = f.tfds_name + (f'/{config}' if config else '')
  builder = arrays._prepared_tfds_builder(tfds_name, data_dir)  # pylint: disable=protected-access
  num = _split_size(builder, split)
  image_feature = builder.info.features['image']

  def read(start, stop, seed):
    config_kwargs = dict(shuffle_seed=seed) if seed is not None else {}
    ds = builder.as_dataset(
        split=f'{split}[{start}:{stop}]', shuffle_files=seed is not None,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(**config_kwargs))
    # Mocked or unsliced sources may hold more: keep exactly the range's length.
    return ds.take(stop - start).map(lambda ex: (ex['image'], tf.cast(ex['label'], tf.int32)))

  def decode(raw):
    image = image_feature.decode_example(raw)
    image = tf.ensure_shape(image, [None, None, None])
    return image[..., :3] if image.shape[-1] == 4 else image

  return Source(num, 3, f.mean, f.std, f.eval_crop, read, decode, False)


def _split_size(builder, split: str) -> int:
  try:
    num = int(builder.info.splits[split].num_examples)
  except Exception:  # pylint: disable=broad-except  # split unknown to the metadata
    num = 0
  if num <= 0:  # unknown metadata (e.g. tfds.testing.mock_data): count records
    num = int(builder.as_dataset(split=split).cardinality())
  if num <= 0:
    raise UserError(f'split {split!r} of {builder.name!r} is empty or has unknown size')
  return num


# -- per-example transforms (TensorFlow, stateless randomness) ---------------------


def _normalize(tf, image, mean, std):
  return core.normalize(tf.cast(image, tf.float32), tf.constant(mean, tf.float32),
                        tf.constant(std, tf.float32))


def _resize_center(tf, image, size: int, crop: float):
  """Evaluation view: central `crop` fraction of the shorter side, resized to size.
  crop=1.0 on a square image is a plain resize (what on-device `preprocess` does)."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * crop, tf.int32)
  if crop == 1.0:  # keep the whole image: stretch, like the in-memory path
    top = left = 0
    crop_h, crop_w = h, w
  else:
    top, left = (h - side) // 2, (w - side) // 2
    crop_h = crop_w = side
  image = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
  return tf.image.resize(image, (size, size), antialias=True)


def eval_transform(source: Source, size: int):
  tf = core.tensorflow()

  def fn(raw, label):
    image = _resize_center(tf, source.decode(raw), size, source.eval_crop)
    image = tf.ensure_shape(_normalize(tf, image, source.mean, source.std),
                            [size, size, source.channels])
    return {'image': image, 'label': label, 'mask': tf.constant(1, tf.int32)}

  return fn


def train_transform(source: Source, size: int, kind: str, base_seed: int):
  tf = core.tensorflow()

  def fn(index, raw, label):
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(base_seed, tf.int64), index]), 2)
    image = source.decode(raw)
    c = source.channels
    if kind == 'none':
      image = _resize_center(tf, image, size, source.eval_crop)
    elif kind == 'crop_flip':
      image = _resize_center(tf, image, size, source.eval_crop)
      image = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
      image = tf.image.stateless_random_crop(image, [size, size, c], seeds[0])
      image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    elif kind == 'caffe':  # Caffe warps to 256 x 256, then crops 227 at random
      big = round(size * CAFFE_RESIZE)
      image = tf.image.resize(image, (big, big), antialias=True)
      image = tf.image.stateless_random_crop(image, [size, size, c], seeds[0])
    else:  # inception
      begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.shape(image), tf.zeros([1, 0, 4], tf.float32), seed=seeds[0],
          min_object_covered=0.0, aspect_ratio_range=INCEPTION_RATIO,
          area_range=INCEPTION_AREA, max_attempts=10, use_image_if_no_bounding_boxes=True)
      image = tf.slice(image, begin, crop_size)
      image = tf.image.resize(image, (size, size), antialias=True)
      image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    image = tf.ensure_shape(_normalize(tf, image, source.mean, source.std), [size, size, c])
    return {'image': image, 'label': label}

  return fn


# -- streams -----------------------------------------------------------------------


def train_stream(name: str, split: str, *, data_dir: str | None = None, global_batch: int,
                 image_size: int | None = None, augment: str = 'none', seed: int = 0,
                 start_step: int = 0, process_index: int = 0, process_count: int = 1,
                 shuffle_buffer: int = SHUFFLE_BUFFER) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches for this process: dict(image float32 [b, S, S, C],
  label int32 [b]) with b = global_batch // process_count; see the module doc."""
  core.check_augment(augment)
  batch = core.local_batch_size(global_batch, process_count, process_index)
  size = core.resolve_image_size(name, image_size, augment)
  if start_step < 0:
    raise UserError(f'start_step={start_step} is not allowed: expected >= 0')
  source = open_source(name, split, data_dir, image_size)
  if source.num_examples // process_count < batch:
    raise UserError(f'global batch {global_batch} is larger than the {source.num_examples} '
                    f'examples of {name!r} {split!r} ({process_count} processes)')
  return source_batches(source, batch=batch, image_size=size, augment=augment, seed=seed,
                        start_step=start_step, process_index=process_index,
                        process_count=process_count, shuffle_buffer=shuffle_buffer)


def source_batches(source: Source, *, batch: int, image_size: int, augment: str, seed: int,
                   start_step: int, process_index: int, process_count: int,
                   shuffle_buffer: int = SHUFFLE_BUFFER) -> Iterator[dict[str, np.ndarray]]:
  """The training batches of `train_stream` for an opened `Source` (local batch)."""
  tf = core.tensorflow()
  size = image_size
  per_process = source.num_examples // process_count
  steps_per_epoch = per_process // batch
  start = process_index * per_process
  buffer = per_process if source.in_memory else min(shuffle_buffer, per_process)

  def epoch_batches(epoch: int, skip_batches: int):
    epoch_seed = core.mix_seed(seed, epoch, process_index)
    ds = source.read(start, start + per_process, epoch_seed)
    ds = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.take(steps_per_epoch * batch).enumerate().skip(skip_batches * batch)
    ds = ds.map(lambda i, ex: train_transform(source, size, augment, epoch_seed)(i, *ex),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()

  def batches():
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
      yield from epoch_batches(epoch, skip)
      epoch, skip = epoch + 1, 0

  return batches()


def eval_stream(name: str, split: str, *, data_dir: str | None = None, global_batch: int,
                image_size: int | None = None, process_index: int = 0, process_count: int = 1
                ) -> tuple[int, Iterator[dict[str, np.ndarray]]]:
  """(number of examples in the split, batches of dict(image, label, mask)).

  Process p reads examples [p * n, (p + 1) * n) with n = ceil(N / process_count);
  all processes yield ceil(n / local batch) batches of the same size."""
  tf = core.tensorflow()
  batch = core.local_batch_size(global_batch, process_count, process_index)
  size = core.resolve_image_size(name, image_size)
  source = open_source(name, split, data_dir, image_size)
  total = source.num_examples
  per_process = math.ceil(total / process_count)
  num_batches = math.ceil(per_process / batch)
  start = min(total, process_index * per_process)
  stop = min(total, start + per_process)
  pad = num_batches * batch - (stop - start)

  padding = tf.data.Dataset.from_tensors({
      'image': tf.zeros([size, size, source.channels], tf.float32),
      'label': tf.constant(0, tf.int32), 'mask': tf.constant(0, tf.int32)}).repeat(pad)
  if stop > start:
    ds = source.read(start, stop, None).map(
        eval_transform(source, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.concatenate(padding)
  else:
    ds = padding
  ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return total, ds.as_numpy_iterator()
