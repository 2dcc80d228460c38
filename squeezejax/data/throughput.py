"""Input-pipeline throughput (images/s): on-device `augment` and `train_stream`.

  python -m squeezejax.data.throughput                 # all measurements
  python -m squeezejax.data.throughput --only=augment  # or --only=stream

`augment` is timed jitted, after one compiling call, on uint8 batches already on
the default device (what the trainer does). `train_stream` is timed on
`tfds.testing.mock_data` photographs (random 8-bit images in TFDS's encoding,
so decoding and resizing are real work) and on the in-memory synthetic set.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from squeezejax import data


def _rate(fn, images_per_call: int, min_seconds: float = 2.0) -> float:
  fn()  # compile / warm up
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < min_seconds:
    fn()
    calls += 1
  return calls * images_per_call / (time.perf_counter() - start)


def augment_rates(batch: int = 128) -> list[tuple[str, float]]:
  rows = []
  for label, shape, size, kinds in [
      ('Fashion-MNIST 28x28x1', (batch, 28, 28, 1), 28, ('none', 'crop_flip')),
      ('CIFAR 32x32x3', (batch, 32, 32, 3), 32, ('none', 'crop_flip', 'inception')),
      ('ImageNet 256x256x3 -> 227', (batch // 4, 256, 256, 3), 227, ('caffe',)),
  ]:
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, shape, np.uint8))
    channels = shape[-1]
    for kind in kinds:
      jitted = jax.jit(lambda x, seed, kind=kind, size=size, c=channels: data.augment(
          x, jax.random.key(seed), kind=kind, image_size=size, mean=(0.5,) * c,
          std=(0.25,) * c))
      seeds = iter(range(1 << 30))
      fn = lambda: jitted(images, next(seeds)).block_until_ready()  # noqa: E731,B023
      rows.append((f'augment {kind:<9} {label}, batch {shape[0]}', _rate(fn, shape[0])))
  return rows


def stream_rates() -> list[tuple[str, float]]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rows = []
  cases = [('imagenette', 'inception', 224, 64), ('imagenet2012', 'caffe', 227, 64)]
  with tfds.testing.mock_data(num_examples=2048):
    for name, kind, size, batch in cases:
      stream = data.train_stream(name, 'train', global_batch=batch, image_size=size,
                                 augment=kind, seed=0, start_step=0, process_index=0,
                                 process_count=1)
      rows.append((f'train_stream {name} (mock) {kind} {size}px, batch {batch}',
                   _rate(lambda: next(stream), batch, 4.0)))  # noqa: B023
  rows += jpeg_stream_rates()
  stream = data.train_stream('synthetic', 'train', global_batch=128, image_size=16,
                             augment='crop_flip', seed=0, start_step=0, process_index=0,
                             process_count=1)
  rows.append(('train_stream synthetic crop_flip 16px, batch 128',
               _rate(lambda: next(stream), 128)))
  return rows


def jpeg_stream_rates(num: int = 512, batch: int = 64) -> list[tuple[str, float]]:
  """The streaming transforms on real JPEG decoding: `num` 500x375 JPEGs (ImageNet's
  typical size, smooth content plus noise) held in memory, so file I/O is excluded."""
  from squeezejax.data import core, pipeline  # pylint: disable=g-import-not-at-top
  tf = core.tensorflow()
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:375, 0:500]
  jpegs = []
  for i in range(num):
    base = 127 + 100 * np.sin(x / (20 + i % 7) + i) * np.cos(y / (15 + i % 5))
    image = np.clip(base[..., None] + rng.normal(0, 12, (375, 500, 3)), 0, 255)
    jpegs.append(tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy())
  labels = (np.arange(num) % 10).astype(np.int32)
  source = pipeline.Source(
      num, 3, core.IMAGENET_MEAN, core.IMAGENET_STD, 0.875,
      read=lambda a, b, seed: tf.data.Dataset.from_tensor_slices((jpegs[a:b], labels[a:b])),
      decode=lambda raw: tf.io.decode_jpeg(raw, channels=3), in_memory=False)
  rows = []
  for kind, size in [('inception', 224), ('caffe', 227), ('none', 224)]:
    stream = pipeline.source_batches(source, batch=batch, image_size=size, augment=kind, seed=0,
                                     start_step=0, process_index=0, process_count=1,
                                     shuffle_buffer=num)
    rows.append((f'train_stream transforms, 500x375 JPEG -> {kind} {size}px, batch {batch}',
                 _rate(lambda: next(stream), batch, 4.0)))  # noqa: B023
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', choices=('augment', 'stream'), default=None)
  args = parser.parse_args(argv)
  print(f'device: {jax.devices()[0].device_kind} x {jax.device_count()}')
  rows = []
  if args.only in (None, 'augment'):
    rows += augment_rates()
  if args.only in (None, 'stream'):
    rows += stream_rates()
  for label, rate in rows:
    print(f'{label:<60} {rate:>12,.0f} images/s')


if __name__ == '__main__':
  main()
