"""Small datasets as host arrays: Fashion-MNIST, CIFAR-10, synthetic, image folders.

`load_arrays` returns an `ArrayDataset` (uint8 images, int32 labels, class names,
per-channel mean/std) that the trainer puts on device once and augments there.
TensorFlow is imported only to read a TFDS split the first time (its decoded arrays
are then kept in squeezejax's cache), to resize, or to read a folder.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from squeezejax import files
from squeezejax.data import core
from squeezejax.data.core import ArrayDataset
from squeezejax.errors import UserError

# -- public entry -----------------------------------------------------------------


def load_arrays(name: str, split: str, *, data_dir: str | None = None,
                image_size: int | None = None) -> ArrayDataset:
  """One split of an in-memory dataset. `image_size` (None or 0: the dataset's
  own size; 224 for folders) resizes the images on the host, once."""
  base, arg = core.parse_name(name)
  if not core.facts(name).in_memory:
    raise UserError(f'dataset {name!r} is too large to load into memory: read it with '
                    'train_stream/eval_stream')
  size = core.resolve_image_size(name, image_size)
  if base == 'synthetic':
    return _resized(synthetic(core.check_split(name, split)), size)
  if base == 'folder':
    return load_folder(arg, split, image_size=size)
  core.check_split(name, split)  # TFDS datasets: read once per process (core.held)
  return core.held((name, split, data_dir, size),
                   lambda: _resized(_tfds_split(base, *_decoded(base, split, data_dir)), size))


# Fixed class lists: TFDS's cifar10 reads its names from the downloaded files.
CLASS_NAMES = {'cifar10': core.CIFAR10_CLASSES, 'fashion_mnist': core.FASHION_MNIST_CLASSES}


@functools.lru_cache(maxsize=4)  # a sweep's points share one (never written)
def placeholder(name: str, split: str, image_size: int | None = None) -> ArrayDataset | None:
  """A split of a TFDS in-memory dataset as zeros of its exact shapes, with its real
  classes and statistics, from what is known before reading it (core.Facts); None
  where that is not enough (synthetic, folders). A program built on it is the one
  built on the real split: what compiles a run ahead (squeezejax.compile_ahead) needs
  no data."""
  base, tfds_config = core.parse_name(name)
  f = core.facts(name)
  if tfds_config or not f.split_sizes or not f.in_memory:
    return None
  n = f.split_sizes[f.splits.index(core.check_split(name, split))]
  size = core.resolve_image_size(name, image_size)
  images, labels = np.zeros((n, size, size, f.channels), np.uint8), np.zeros(n, np.int32)
  images.setflags(write=False)  # shared by the cache
  labels.setflags(write=False)
  return _tfds_split(base, images, labels)


def _tfds_split(base: str, images: np.ndarray, labels: np.ndarray) -> ArrayDataset:
  """A TFDS in-memory split with its fixed classes and published statistics."""
  f, names = core.facts(base), CLASS_NAMES[base]
  return ArrayDataset(images, labels, len(names), names, f.mean, f.std)


def _resized(ds: ArrayDataset, size: int) -> ArrayDataset:
  if ds.images.shape[1:3] == (size, size):
    return ds
  return dataclasses.replace(ds, images=resize_uint8(ds.images, size))


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (antialiased) resize of a uint8 batch to size x size, on the CPU."""
  tf = core.tensorflow()
  out = []
  for start in range(0, len(images), 4096):  # bounded float32 memory
    x = tf.image.resize(images[start:start + 4096], (size, size), antialias=True)
    out.append(np.clip(np.round(x.numpy()), 0, 255).astype(np.uint8))
  return np.concatenate(out) if out else np.zeros((0, size, size, images.shape[-1]), np.uint8)


# -- synthetic --------------------------------------------------------------------

SYNTHETIC_SIZES = {'train': 640, 'test': 300}  # 300: not a multiple of usual batches
SYNTHETIC_CLASSES = 10
SYNTHETIC_IMAGE_SIZE = 16


@functools.lru_cache(maxsize=4)
def synthetic(split: str) -> ArrayDataset:
  """Deterministic, learnable 16x16 RGB images in 10 classes (640 train, 300 test).

  Each class has its own colour and stripe direction/width, both kept by crops
  and flips, plus a random stripe phase and pixel noise: a tiny network separates
  the classes in tens of steps, while a constant predictor stays at 10%.
  """
  images, labels = _synthetic_arrays(split)
  k = SYNTHETIC_CLASSES
  mean, std = channel_stats(_synthetic_arrays('train')[0])
  return ArrayDataset(images, labels, k, tuple(f'class_{c}' for c in range(k)), mean, std)


@functools.lru_cache(maxsize=2)
def _synthetic_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
  n, s, k = SYNTHETIC_SIZES[split], SYNTHETIC_IMAGE_SIZE, SYNTHETIC_CLASSES
  rng = np.random.default_rng(0 if split == 'train' else 1)
  labels = rng.permutation(np.arange(n) % k).astype(np.int32)
  colours = np.random.default_rng(1234).uniform(40, 215, size=(k, 3))
  y, x = np.mgrid[0:s, 0:s].astype(np.float32)
  patterns = []
  for c in range(k):
    angle = np.pi * (c % 5) / 5  # five stripe directions
    freq = 2 * np.pi / (3.0 if c < 5 else 6.0)  # two stripe widths
    patterns.append(np.sin(freq * (np.cos(angle) * x + np.sin(angle) * y)))
  shifts = rng.integers(0, s, size=(n, 2))  # position carries no label
  images = np.empty((n, s, s, 3), np.float32)
  for i, c in enumerate(labels):
    stripes = np.roll(patterns[c], tuple(shifts[i]), axis=(0, 1))
    images[i] = colours[c] + 35.0 * stripes[..., None]
  images += rng.normal(0, 20.0, size=images.shape)
  images = np.clip(np.round(images), 0, 255).astype(np.uint8)
  images.setflags(write=False)  # shared by the cache
  labels.setflags(write=False)
  return images, labels


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std in [0, 1] units, accumulated in float64."""
  x = images.reshape(-1, images.shape[-1])
  total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
  for start in range(0, len(x), 1 << 22):
    chunk = x[start:start + (1 << 22)].astype(np.float64) / 255.0
    total += chunk.sum(0)
    total_sq += (chunk ** 2).sum(0)
  mean = total / len(x)
  std = np.sqrt(np.maximum(total_sq / len(x) - mean ** 2, 1e-12))
  return tuple(round(float(m), 4) for m in mean), tuple(round(float(v), 4) for v in std)


# -- TFDS datasets ----------------------------------------------------------------


def prepare_fashion_mnist(data_dir: str | None = None):
  """The prepared `fashion_mnist_local` builder (prepared on first use), or the stock
  TFDS `fashion_mnist` when the IDX files are absent."""
  core.tensorflow()  # before TFDS touches TensorFlow
  from squeezejax.data import fashion_mnist_local as fml  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('fashion_mnist_local', data_dir=data_dir)
  if builder.is_prepared():
    return builder
  directory = fml.source_dir()
  missing = fml.missing_files(directory)
  if not missing:
    print(f'preparing Fashion-MNIST from {directory} into {builder.data_dir} (once)',
          flush=True)
    # tfrecord: TFDS's as_dataset (tf.data) cannot read array_record files.
    with core.quiet_tfds():
      builder.download_and_prepare(file_format='tfrecord')
    return builder
  if os.environ.get(fml.SOURCE_DIR_ENV):  # the user named a folder: don't fall back
    raise UserError(f'Fashion-MNIST files {", ".join(missing)} not found in {directory} '
                    f'(from ${fml.SOURCE_DIR_ENV}): {fml.APT_HINT}')
  try:
    return _prepared_tfds_builder('fashion_mnist', data_dir)
  except UserError as e:
    raise UserError(f'Fashion-MNIST not found: no IDX files in {directory} ({fml.APT_HINT}, '
                    f'or set ${fml.SOURCE_DIR_ENV}) and {e}') from None


def _read_tfds(base: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """A split's images and labels, read from its prepared TFDS builder with tf.data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = (prepare_fashion_mnist(data_dir) if base == 'fashion_mnist'
             else _prepared_tfds_builder(core.facts(base).tfds_name, data_dir))
  images, labels = [], []
  for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)):
    images.append(batch['image'])
    labels.append(batch['label'])
  if not labels:
    raise UserError(f'split {split!r} of {base!r} is empty')
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)


def _prepared_tfds_builder(tfds_name: str, data_dir: str | None):
  """A stock TFDS builder, downloaded and prepared if needed; failures -> UserError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  core.tensorflow()
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    with core.quiet_tfds():
      builder.download_and_prepare()  # a no-op once prepared
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # network, manual files, disk
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise UserError(f'TFDS dataset {tfds_name!r} could not be prepared in '
                    f'{data_dir or "the TFDS data_dir"}: {first_line}') from None
  return builder


# -- decoded splits, kept on disk --------------------------------------------------
# Reading a split back from TFDS means importing TensorFlow and decoding every PNG:
# seconds, in every process. The decoded arrays are kept in squeezejax's cache
# instead, under a name that covers what decides their content; a later process
# loads them without TensorFlow.

DECODED_FORMAT = 1  # raise when what is kept, or how it is read, changes
DECODED_KEPT = 3  # newest files kept per dataset and split (each data_dir is a new key)


def _decoded_path(base: str, split: str, data_dir: str | None) -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  # TFDS's own default data_dir, resolved without importing TFDS.
  tfds_dir = data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
  key = {'format': DECODED_FORMAT, 'dataset': base, 'split': split,
         'data_dir': os.path.abspath(os.path.expanduser(tfds_dir)),
         'tfds': metadata.version('tensorflow-datasets')}
  if base == 'fashion_mnist':  # read from its IDX files: any change to them is a new key
    directory = core.fashion_mnist_dir()
    key['sources'] = [_file_stamp(os.path.join(directory, name))
                      for name in core.FASHION_MNIST_FILES[split][:2]]
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
  return os.path.join(files.cache_dir('datasets'), f'{base}-{split}-{digest}.npz')


def _file_stamp(path: str) -> list:
  try:
    st = os.stat(path)
  except OSError:
    return [path, None]
  return [path, st.st_size, st.st_mtime_ns]


def _decoded(base: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """The split's (images, labels): from the cache, or read from TFDS and then kept
  there (atomically; where the cache cannot be written, the next process reads again)."""
  path = _decoded_path(base, split, data_dir)
  try:
    with np.load(path) as kept:
      return kept['images'], kept['labels']
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
    pass  # absent, or unreadable (then replaced below)
  images, labels = _read_tfds(base, split, data_dir)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    files.write_atomic(path, buffer.getvalue())
    others = glob.glob(os.path.join(os.path.dirname(path), f'{base}-{split}-*.npz'))
    for old in sorted(others, key=os.path.getmtime, reverse=True)[DECODED_KEPT:]:
      os.remove(old)
  except OSError:
    pass  # not writable, or another process pruned first
  return images, labels


# -- image folders ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Folder:
  """An image folder's classes and splits; `dataset(split)` decodes it (RGB uint8)."""
  root: str
  classes: tuple[str, ...]
  split_sizes: dict[str, int]
  builder: object = None  # tfds.ImageFolder for the ROOT/SPLIT/CLASS layout
  files: dict[str, list[tuple[str, int]]] | None = None  # ROOT/CLASS layout

  def labelled_files(self, split: str) -> list[tuple[str, int]]:
    """(path, label) of every image of a split, in a fixed order."""
    if self.files is not None:
      return self.files[split]
    top = os.path.join(self.root, split)
    return [(p, self.classes.index(c)) for c in sorted(os.listdir(top))
            if os.path.isdir(os.path.join(top, c)) for p in _image_files(os.path.join(top, c))]

  def split_files(self, split: str) -> list[str]:
    return [path for path, _ in self.labelled_files(split)]

  def dataset(self, split: str):
    """tf.data of (image uint8 [h, w, 3], label int32), in a fixed order."""
    tf = core.tensorflow()
    if self.builder is not None:
      ds = self.builder.as_dataset(split=split, shuffle_files=False)
      return ds.map(lambda ex: (ex['image'], tf.cast(ex['label'], tf.int32)))
    paths, labels = zip(*self.files[split])

    def decode(path, label):
      data = tf.io.read_file(path)
      return tf.io.decode_image(data, channels=3, expand_animations=False), label

    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.array(labels, np.int32)))
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def open_folder(root: str) -> Folder:
  """Two layouts. ROOT/SPLIT/CLASS/*.png|jpg (a 'train' split, any others; classes
  = the union of class folders) is read with TFDS's `ImageFolder`. ROOT/CLASS/*
  is split here: within each class, in sorted file-name order, every 5th image
  (the 5th, 10th, ...) goes to 'test', the others to 'train'."""
  if not os.path.isdir(root):
    raise UserError(f'image folder {root!r} does not exist: expected folder:PATH with '
                    'PATH/CLASS/*.png|jpg or PATH/train/CLASS/*.png|jpg')
  subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if 'train' in subdirs and all(_has_subdirs(os.path.join(root, d)) for d in subdirs):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    core.tensorflow()
    builder = tfds.ImageFolder(root)
    sizes = {s: int(info.num_examples) for s, info in builder.info.splits.items()}
    if not sizes.get('train'):
      raise UserError(f'image folder {root!r} has no images in train/: expected '
                      'PATH/train/CLASS/*.png|jpg')
    if len(builder.info.features['label'].names) < 2:
      raise UserError(f'image folder {root!r} has fewer than 2 class folders in its splits: '
                      'expected one subfolder per class')
    return Folder(root, tuple(builder.info.features['label'].names), sizes, builder=builder)
  files: dict[str, list[tuple[str, int]]] = {'train': [], 'test': []}
  classes = []
  for name in subdirs:
    paths = _image_files(os.path.join(root, name))
    if not paths:  # a class the model would have but never see
      raise UserError(f'class folder {os.path.join(root, name)!r} has no images: expected '
                      f'{", ".join("*" + e for e in core.IMAGE_EXTENSIONS)} files, or remove it')
    for i, path in enumerate(paths):
      files['test' if i % 5 == 4 else 'train'].append((path, len(classes)))
    classes.append(name)
  if len(classes) < 2:
    raise UserError(f'image folder {root!r} has {len(classes)} class folder(s): expected at '
                    'least 2 (PATH/CLASS/*.png|jpg or PATH/train/CLASS/..., one subfolder '
                    'per class)')
  return Folder(root, tuple(classes), {s: len(v) for s, v in files.items()}, files=files)


def _has_subdirs(path: str) -> bool:
  return any(os.path.isdir(os.path.join(path, d)) for d in os.listdir(path))


def _image_files(directory: str) -> list[str]:
  return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                if f.lower().endswith(core.IMAGE_EXTENSIONS))


def load_folder(root: str, split: str, *, image_size: int) -> ArrayDataset:
  """Every image of one split, as RGB (grayscale repeated), resized (stretched,
  like torchvision's Resize((s, s))) to image_size; ImageNet mean/std, so that
  torchvision-pretrained weights see the inputs they were trained on."""
  tf = core.tensorflow()
  folder = open_folder(root)
  core.check_split(f'folder:{root}', split, tuple(folder.split_sizes))
  if not folder.split_sizes[split]:
    raise UserError(f'split {split!r} of image folder {root!r} is empty')

  def resize(image, label):
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

  ds = folder.dataset(split).map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  images, labels = [], []
  try:
    for x, y in ds.as_numpy_iterator():
      images.append(x)
      labels.append(y)
  except tf.errors.OpError:
    raise UserError(_first_unreadable(folder.split_files(split))) from None
  return ArrayDataset(np.concatenate(images), np.concatenate(labels).astype(np.int32),
                      len(folder.classes), folder.classes, core.IMAGENET_MEAN,
                      core.IMAGENET_STD)


def _first_unreadable(paths: list[str]) -> str:
  tf = core.tensorflow()
  for path in paths:
    try:
      tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as e:
      reason = (e.message or type(e).__name__).strip().splitlines()[0][:200]
      return f'cannot read image {path}: {reason} (expected a PNG or JPEG file)'
  return f'cannot read the images under {os.path.dirname(os.path.dirname(paths[0]))}'
