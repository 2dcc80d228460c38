"""squeezejax's input data: the only package that imports TensorFlow / TFDS.

  from squeezejax import data
  if data.is_in_memory(name):            # fashion_mnist, cifar10, synthetic, folder:PATH
    train = data.load_arrays(name, 'train')        # uint8 arrays + mean/std
    x = data.augment(images, key, kind='crop_flip', image_size=32,
                     mean=train.mean, std=train.std)   # inside the jitted step
  else:                                  # imagenette, imagenet2012
    it = data.train_stream(name, 'train', data_dir=..., global_batch=512, ...)

Importing this package is cheap: TensorFlow (with accelerators hidden from it)
and TFDS are imported only when a dataset is read. See the README, section Data.
"""

from squeezejax.data.arrays import channel_stats, load_arrays, open_folder, synthetic
from squeezejax.data.augment import augment, preprocess
from squeezejax.data.core import (AUGMENTATIONS, DATASETS, ArrayDataset, DataError,
                                  check_split, is_in_memory, parse_name,
                                  resolve_image_size)
from squeezejax.data.describe import DatasetSummary, describe
from squeezejax.data.pipeline import eval_stream, train_stream

__all__ = [
    'AUGMENTATIONS', 'DATASETS', 'ArrayDataset', 'DataError', 'DatasetSummary', 'augment',
    'channel_stats', 'check_split', 'describe', 'eval_stream', 'is_in_memory', 'load_arrays',
    'open_folder', 'parse_name', 'preprocess', 'resolve_image_size', 'synthetic',
    'train_stream',
]
