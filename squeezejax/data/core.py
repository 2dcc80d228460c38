"""Names, facts and checks shared by the data package (no TensorFlow at import).

Every dataset the trainer accepts is described here once: its splits, classes,
native image size, normalisation and whether it fits in memory. User mistakes
(unknown name, split, path) become a one-line `UserError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from typing import Any

import numpy as np
from absl import logging as absl_logging

from squeezejax import cli
from squeezejax.errors import UserError

DATASETS = ('fashion_mnist', 'cifar10', 'imagenette', 'imagenet2012', 'synthetic',
            'folder:PATH')
AUGMENTATIONS = ('none', 'crop_flip', 'caffe', 'inception')
FOLDER_PREFIX = 'folder:'
FOLDER_IMAGE_SIZE = 224  # default resize target of `folder:` images (torchvision's input)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
# Fashion-MNIST's four IDX files, as Debian's dataset-fashion-mnist package installs them.
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_DIR_ENV = 'SQUEEZEJAX_FASHION_MNIST_DIR'  # another folder holding them
FASHION_MNIST_FILES = {  # split -> (images, labels, count)
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 60_000),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 10_000),
}
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')

# Normalisation constants, in [0, 1] pixel units, per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)



@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """One split held in host memory, ready to put on device."""
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]
  num_classes: int
  class_names: tuple[str, ...]
  mean: tuple[float, ...]  # per channel, [0, 1] pixel units
  std: tuple[float, ...]

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Facts:
  """What is known about a dataset before reading any of it."""
  splits: tuple[str, ...]
  image_size: int  # native (or default) side length
  channels: int
  in_memory: bool
  mean: tuple[float, ...]
  std: tuple[float, ...]
  # Evaluation keeps this central fraction of the image before resizing (1.0 for
  # pre-sized datasets; 0.875 = the usual 224/256 for natural photographs).
  eval_crop: float = 1.0
  tfds_name: str = ''
  split_sizes: tuple[int, ...] = ()  # of `splits`, where fixed (TFDS's own datasets)


# CIFAR-10 and Fashion-MNIST statistics are the usual published values (the test
# suite recomputes Fashion-MNIST's from the train split).
_FACTS = {
    'fashion_mnist': Facts(('train', 'test'), 28, 1, True, (0.2860,), (0.3530,),
                           tfds_name='fashion_mnist', split_sizes=tuple(
                               FASHION_MNIST_FILES[split][2] for split in ('train', 'test'))),
    'cifar10': Facts(('train', 'test'), 32, 3, True, (0.4914, 0.4822, 0.4465),
                     (0.2470, 0.2435, 0.2616), tfds_name='cifar10',
                     split_sizes=(50_000, 10_000)),
    'imagenette': Facts(('train', 'validation'), 224, 3, False, IMAGENET_MEAN, IMAGENET_STD,
                        eval_crop=0.875, tfds_name='imagenette'),
    'imagenet2012': Facts(('train', 'validation'), 224, 3, False, IMAGENET_MEAN,
                          IMAGENET_STD, eval_crop=0.875, tfds_name='imagenet2012'),
    # Placeholders: the generator and the folder reader fill in the numbers.
    'synthetic': Facts(('train', 'test'), 16, 3, True, (0.5,) * 3, (0.25,) * 3),
    'folder': Facts(('train', 'test'), FOLDER_IMAGE_SIZE, 3, True, IMAGENET_MEAN,
                    IMAGENET_STD),
}


def fashion_mnist_dir() -> str:
  return os.environ.get(FASHION_MNIST_DIR_ENV) or FASHION_MNIST_DIR


def parse_name(name: Any) -> tuple[str, str]:
  """'cifar10' -> ('cifar10', ''); 'folder:/x' -> ('folder', '/x');
  'imagenette/160px-v2' -> ('imagenette', '160px-v2') (a TFDS config)."""
  allowed = f'expected one of {", ".join(DATASETS)}'
  if not isinstance(name, str) or not name:
    raise UserError(f'dataset name {name!r} is not allowed: {allowed}')
  if name.startswith(FOLDER_PREFIX):
    path = name[len(FOLDER_PREFIX):]
    if not path:
      raise UserError(f'dataset {name!r} names no folder: expected folder:/path/to/images')
    return 'folder', os.path.expanduser(path)
  base, _, config = name.partition('/')
  if base not in _FACTS or base == 'folder' or (config and not _FACTS[base].tfds_name):
    raise UserError(f'unknown dataset {name!r}: {allowed}')
  return base, config


def facts(name: str) -> Facts:
  return _FACTS[parse_name(name)[0]]


def is_in_memory(name: str) -> bool:
  """True for datasets small enough to hold on device (the trainer then uses
  `load_arrays` + on-device `augment`; otherwise `train_stream`/`eval_stream`)."""
  return facts(name).in_memory


def check_split(name: str, split: Any, allowed: tuple[str, ...] | None = None) -> str:
  allowed = allowed or facts(name).splits
  if split not in allowed:
    raise UserError(f'dataset {name!r} has no split {split!r}: expected one of '
                    f'{", ".join(allowed)}')
  return split


def check_augment(kind: Any) -> str:
  if kind not in AUGMENTATIONS:
    raise UserError(f'unknown augmentation {kind!r}: expected one of {", ".join(AUGMENTATIONS)}')
  return kind


def resolve_image_size(name: str, image_size: int | None, augment: str = 'none') -> int:
  """None or 0 -> the dataset's own size (227 for the Caffe recipe on photographs)."""
  if image_size is not None and (not isinstance(image_size, (int, np.integer))
                                 or isinstance(image_size, bool) or image_size < 0):
    raise UserError(f'image_size={image_size!r} is not allowed: expected a positive '
                    'integer, or 0/None for the dataset\'s own size')
  if image_size:
    return int(image_size)
  f = facts(name)
  if augment == 'caffe' and not f.in_memory:
    return 227
  return f.image_size


def normalize(pixels, mean, std):
  """(pixels / 255 - mean) / std per channel, pixels as floats in 0..255: the one
  normalisation of every input path (jnp on device, tf.data, numpy in predict)."""
  return (pixels / 255.0 - mean) / std


def local_batch_size(global_batch: int, process_count: int, process_index: int) -> int:
  if not (0 <= process_index < process_count):
    raise UserError(f'process_index={process_index} is not allowed: expected 0..'
                    f'{process_count - 1} for process_count={process_count}')
  if global_batch <= 0 or global_batch % process_count:
    raise UserError(f'global batch {global_batch} is not allowed: expected a positive '
                    f'multiple of the process count {process_count}')
  return global_batch // process_count


def stats_tuple(values: Any, channels: int, what: str) -> tuple[float, ...]:
  values = tuple(float(v) for v in np.atleast_1d(np.asarray(values, np.float64)))
  if len(values) == 1 and channels > 1:
    values = values * channels
  if len(values) != channels:
    raise UserError(f'{what}={values} has {len(values)} values: expected {channels} '
                    '(one per image channel)')
  return values


def mix_seed(*parts: int) -> int:
  """A stable 31-bit seed from integers (Python's hash() is salted per process)."""
  return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts])
             .generate_state(1)[0] & 0x7FFFFFFF)


_HELD: dict[tuple, ArrayDataset] = {}
MAX_HELD = 4  # splits held per process (Fashion-MNIST's two are 63 MB)


def held(key: tuple, load) -> ArrayDataset:
  """`load()`'s split, loaded once per process and held (read-only uint8): a sweep's
  points in one process share it instead of each reading TFDS again."""
  if key not in _HELD:
    ds = load()
    ds.images.setflags(write=False)
    ds.labels.setflags(write=False)
    if len(_HELD) >= MAX_HELD:
      _HELD.pop(next(iter(_HELD)))
    _HELD[key] = ds
  return _HELD[key]


_tf_module = None


@contextlib.contextmanager
def quiet_tfds():
  """TFDS prints its preparation banners unconditionally; keep them for --verbose."""
  if cli.verbose():
    yield
  else:
    with contextlib.redirect_stdout(io.StringIO()):
      yield


def tensorflow():
  """Import TensorFlow once, with GPUs/TPUs hidden so it never takes device memory
  from JAX; the one place TensorFlow is imported (export uses it from here too).

  TensorFlow only decodes, resizes and converts here, so its oneDNN kernels are
  off (whatever the verbosity: their banner would be the first screen); its C++
  logs and TFDS's progress bars show only with `squeezejax --verbose`.
  """
  global _tf_module
  if _tf_module is None:
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
    if not cli.verbose():
      os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if not cli.verbose():
      tfds.disable_progress_bar()
      absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS's INFO and WARNING lines
    try:
      tf.config.set_visible_devices([], 'GPU')
      tf.config.set_visible_devices([], 'TPU')
    except (RuntimeError, ValueError):
      pass  # already initialised (devices then stay as they were) or no TPU type
    _tf_module = tf
  return _tf_module
