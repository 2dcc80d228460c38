"""squeezejax's input data: the only package that imports TensorFlow / TFDS.

  from squeezejax import data
  source = data.make_input(config)          # what the trainer reads: batches, classes, ...
  if data.is_in_memory(name):            # fashion_mnist, cifar10, synthetic, folder:PATH
    train = data.load_arrays(name, 'train')        # uint8 arrays + mean/std
  else:                                  # imagenette, imagenet2012
    it = data.train_stream(name, 'train', data_dir=..., global_batch=512, ...)

Importing this package is cheap: TensorFlow (with accelerators hidden from it)
and TFDS are imported only when a dataset is read (`tensorflow()`).
"""

from squeezejax.data.arrays import channel_stats, load_arrays, open_folder, synthetic
from squeezejax.data.augment import augment, preprocess
from squeezejax.data.core import (AUGMENTATIONS, DATASETS, ArrayDataset, check_split,
                                  is_in_memory, normalize, parse_name, resolve_image_size,
                                  tensorflow)
from squeezejax.data.describe import DatasetSummary, describe
from squeezejax.data.input import (DeviceBatches, InMemoryBatches, Input, Preprocessing,
                                   make_input, on_device, padded_batches, prefetch)
from squeezejax.data.pipeline import eval_stream, train_stream

__all__ = [
    'AUGMENTATIONS', 'DATASETS', 'ArrayDataset', 'DatasetSummary', 'DeviceBatches',
    'InMemoryBatches', 'Input', 'Preprocessing', 'augment', 'channel_stats', 'check_split',
    'describe', 'eval_stream', 'is_in_memory', 'load_arrays', 'make_input', 'normalize',
    'on_device', 'open_folder', 'padded_batches', 'parse_name', 'prefetch', 'preprocess',
    'resolve_image_size', 'synthetic', 'tensorflow', 'train_stream',
]
