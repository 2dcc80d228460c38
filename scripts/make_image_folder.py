"""Writes real dataset images as a class-per-subfolder image folder (PNG).

  python scripts/make_image_folder.py --dataset=fashion_mnist --per_class=100 --out=runs/fmnist_folder

The result is what `squeezejax finetune --data=...` reads (`folder:PATH`): it turns
any in-memory dataset into the "your own images" layout of the transfer-learning
walk-throughs, with real pixels.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from squeezejax import data


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='fashion_mnist')
  parser.add_argument('--split', default='train')
  parser.add_argument('--per_class', type=int, default=100)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  if os.path.exists(args.out) and os.listdir(args.out):
    print(f'make_image_folder: error: --out={args.out!r} is not empty', file=sys.stderr)
    return 2
  ds = data.load_arrays(args.dataset, args.split)
  for c, name in enumerate(ds.class_names):
    folder = os.path.join(args.out, name.replace('/', '_').replace(' ', '_'))
    os.makedirs(folder, exist_ok=True)
    for i, index in enumerate(np.flatnonzero(ds.labels == c)[:args.per_class]):
      image = ds.images[index]
      Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
          os.path.join(folder, f'{i:05d}.png'))
  print(f'wrote {args.per_class} images per class for {len(ds.class_names)} classes to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
