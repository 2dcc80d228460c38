"""What a dataset is, without reading its images: classes, split sizes, shapes."""

from __future__ import annotations

import dataclasses

from squeezejax.data import arrays, core

# Published split sizes, used when the TFDS metadata is not on disk yet.
_KNOWN_SPLIT_SIZES = {
    'fashion_mnist': {'train': 60_000, 'test': 10_000},
    'cifar10': {'train': 50_000, 'test': 10_000},
    'imagenette': {'train': 9_469, 'validation': 3_925},
    'imagenet2012': {'train': 1_281_167, 'validation': 50_000},
}


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
  name: str
  num_classes: int
  class_names: tuple[str, ...]
  split_sizes: dict[str, int]
  image_size: int  # native side length (folders: the default resize target)
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  in_memory: bool


def describe(name: str, *, data_dir: str | None = None) -> DatasetSummary:
  """Dataset facts for the trainer (epochs -> steps, num_classes) and logs.
  Cheap: reads no image (folders are listed, TFDS metadata is read if present)."""
  base, arg = core.parse_name(name)
  f = core.facts(name)
  if base == 'synthetic':
    ds = arrays.synthetic('train')
    return DatasetSummary(name, ds.num_classes, ds.class_names, dict(arrays.SYNTHETIC_SIZES),
                          f.image_size, 3, ds.mean, ds.std, True)
  if base == 'folder':
    folder = arrays.open_folder(arg)
    return DatasetSummary(name, len(folder.classes), folder.classes, dict(folder.split_sizes),
                          f.image_size, 3, f.mean, f.std, True)
  sizes = dict(_KNOWN_SPLIT_SIZES[base])
  if base == 'fashion_mnist':
    classes = core.FASHION_MNIST_CLASSES
  elif base == 'cifar10':
    classes = core.CIFAR10_CLASSES
  else:  # the class list lives in the TFDS builder's code (no download needed)
    core.tensorflow()
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(f.tfds_name + (f'/{arg}' if arg else ''), data_dir=data_dir)
    classes = tuple(builder.info.features['label'].names)
    for split in sizes:
      try:
        sizes[split] = int(builder.info.splits[split].num_examples) or sizes[split]
      except Exception:  # pylint: disable=broad-except  # metadata not prepared
        pass
  return DatasetSummary(name, len(classes), classes, sizes, f.image_size, f.channels, f.mean,
                        f.std, f.in_memory)
