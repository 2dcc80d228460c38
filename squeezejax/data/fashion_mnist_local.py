"""`fashion_mnist_local`: a TFDS builder for the Debian Fashion-MNIST IDX files.

Debian's `dataset-fashion-mnist` package installs the four original IDX files
under /usr/share/datasets/fashion-mnist/. Their gzip bytes differ from the ones
TFDS's stock `fashion_mnist` checksums, so that builder rejects them although the
pixels are the same; this builder reads them directly, with no download. It is
prepared once into the TFDS data_dir (`~/tensorflow_datasets` or
`$TFDS_DATA_DIR`, or the `data_dir` argument) and then read back like any TFDS
dataset. `SQUEEZEJAX_FASHION_MNIST_DIR` points it at another folder.

Importing this module imports tensorflow_datasets (not TensorFlow).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from squeezejax.data.core import FASHION_MNIST_CLASSES as CLASS_NAMES
from squeezejax.data.core import FASHION_MNIST_DIR_ENV as SOURCE_DIR_ENV
from squeezejax.data.core import FASHION_MNIST_FILES as _FILES
from squeezejax.data.core import fashion_mnist_dir as source_dir
from squeezejax.errors import UserError

APT_HINT = 'apt-get install dataset-fashion-mnist'
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def missing_files(directory: str) -> list[str]:
  return [f for images, labels, _ in _FILES.values() for f in (images, labels)
          if not os.path.isfile(os.path.join(directory, f))]


def read_idx(path: str, magic: int, count: int) -> np.ndarray:
  """An IDX file (gzip) -> uint8 array [count, ...]; checks header and length."""
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise UserError(f'cannot read Fashion-MNIST file {path}: {e}') from None
  header = np.frombuffer(raw[:4], '>i4')
  ndim = int(raw[3]) if len(raw) >= 4 else 0
  dims = tuple(int(d) for d in np.frombuffer(raw[4:4 + 4 * ndim], '>i4'))
  if len(raw) < 4 or int(header[0]) != magic or not dims or dims[0] != count:
    raise UserError(f'{path} is not an IDX file of {count} items (magic {magic}); '
                    f'reinstall it: {APT_HINT}')
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise UserError(f'{path} is truncated: {data.size} bytes of {int(np.prod(dims))}')
  return data.reshape(dims)


def encode_png(image: np.ndarray) -> bytes:
  """A grayscale uint8 [h, w] or [h, w, 1] image as PNG bytes.

  TFDS would encode each image with a TensorFlow op call, two thirds of the
  preparation time; this writes the same pixels directly (zlib, no filter)."""
  image = np.ascontiguousarray(image.reshape(image.shape[0], image.shape[1]), np.uint8)
  h, w = image.shape
  rows = np.concatenate([np.zeros((h, 1), np.uint8), image], axis=1)  # filter byte 0 per row

  def chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF))

  header = struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
          + chunk(b'IDAT', zlib.compress(rows.tobytes(), 6)) + chunk(b'IEND', b''))


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (Xiao et al. 2017) from local IDX files: 60,000 train / 10,000 test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Read from the Debian dataset-fashion-mnist IDX files.'}
  # TFDS 4.9.10 finds a builder's source file through `importlib_resources`, which
  # its Python >= 3.9 install no longer pulls in; naming the file skips that look-up.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Fashion-MNIST, 28x28 grayscale, 10 classes, from local IDX files.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,  # keep the IDX files' order (first train label: 9)
        homepage='https://github.com/zalandoresearch/fashion-mnist',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    directory = source_dir()
    missing = missing_files(directory)
    if missing:
      raise UserError(f'Fashion-MNIST files {", ".join(missing)} not found in {directory}: '
                      f'{APT_HINT} (or set {SOURCE_DIR_ENV})')
    return {split: self._generate_examples(os.path.join(directory, images),
                                           os.path.join(directory, labels), count)
            for split, (images, labels, count) in _FILES.items()}

  def _generate_examples(self, images_path: str, labels_path: str, count: int):
    images = read_idx(images_path, _IMAGE_MAGIC, count)[..., None]
    labels = read_idx(labels_path, _LABEL_MAGIC, count)
    if labels.max() >= len(CLASS_NAMES):
      raise UserError(f'{labels_path} has label {labels.max()}: expected 0..9')
    for index in range(count):
      yield index, {'image': encode_png(images[index]), 'label': int(labels[index])}
