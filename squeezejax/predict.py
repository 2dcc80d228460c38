"""`squeezejax predict`: top-k classes of image files from a model directory.

  squeezejax predict --checkpoint=models/sq11 --top_k=5 cat.jpg dog.png

Images are prepared with the `preprocessing` stored in the model directory:
'torchvision' (imported weights) resizes the short side to `resize`, crops the
centre `image_size` square, scales to [0, 1] and normalises by mean/std;
'dataset' (trained models) resizes to `image_size` square (or resize + centre
crop when `resize` is given) and normalises by the dataset's mean/std; 'caffe'
(the authors' Deep Compression SqueezeNet) squashes to `resize` square, crops the
centre, reverses to BGR and subtracts the 0..255 mean. A file
that cannot be read gets one error line and the others still run; the exit
code is 1 if any failed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import numpy as np

from squeezejax import cli, data
from squeezejax.errors import UserError

BATCH = 32  # images per compiled call; the last batch is padded to keep one shape



# -- images ----------------------------------------------------------------------------


def load_image(path: str, preprocessing: dict[str, Any], channels: int = 3) -> np.ndarray:
  """One image file -> HWC float32, normalised as the model was trained."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert('L' if channels == 1 else 'RGB')
  except FileNotFoundError:
    raise UserError('no such file') from None
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types for bad files
    raise UserError(f'not a readable image ({type(e).__name__}: {e})') from None
  return preprocess(image, preprocessing)


def preprocess(image, preprocessing: dict[str, Any]) -> np.ndarray:
  """A PIL image -> HWC float32 (torchvision's Resize + CenterCrop + Normalize)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  size = int(preprocessing['image_size'])
  resize = preprocessing.get('resize')
  if preprocessing.get('kind') == 'caffe':
    return caffe_preprocess(image, size, int(resize), preprocessing['mean_bgr'])
  if resize:
    # Resize(resize): the short side becomes `resize`, the long one is truncated
    # as torchvision does; then CenterCrop(size) with its rounding.
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(resize), int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
  else:
    image = image.resize((size, size), Image.BILINEAR)
  x = np.asarray(image, np.float32)
  if x.ndim == 2:
    x = x[:, :, None]
  mean = np.asarray(preprocessing.get('mean', [0.0]), np.float32)
  std = np.asarray(preprocessing.get('std', [1.0]), np.float32)
  return data.normalize(x, mean, std)


def caffe_preprocess(image, size: int, resize: int, mean_bgr) -> np.ndarray:
  """Caffe's ImageNet transform: a resize x resize image, its centre size x size crop
  (offset (resize - size) // 2, as Caffe's data layer), BGR, 0..255 minus the mean."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = image.convert('RGB').resize((resize, resize), Image.BILINEAR)
  top = (resize - size) // 2
  x = np.asarray(image, np.float32)[top:top + size, top:top + size, ::-1]
  return x - np.asarray(mean_bgr, np.float32)


# -- prediction --------------------------------------------------------------------------


def class_names(meta: dict[str, Any], num_classes: int) -> list[str]:
  names = meta.get('class_names')
  if names and len(names) == num_classes:
    return [str(n) for n in names]
  return [f'class_{i}' for i in range(num_classes)]


def logits(spec, params, images: np.ndarray, batch_size: int = BATCH,
           prepare: Callable | None = None) -> np.ndarray:
  """The model's logits for host images, in fixed-size padded batches so that XLA
  compiles once; `prepare` (e.g. `data.Preprocessing.eval`) runs on the device first."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from squeezejax import model as model_lib, parallel  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model_lib.from_params(spec, params))
  prepare = prepare or (lambda x: x)
  fn = parallel.jit(lambda s, x: nnx.merge(graphdef, s)(prepare(x)))
  out = [np.asarray(fn(state, b['image']))[b['mask'] > 0]
         for b in data.padded_batches({'image': images}, min(batch_size, len(images)))]
  return np.concatenate(out)


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def top_k(probs: np.ndarray, k: int, names: Sequence[str]) -> list[tuple[str, float]]:
  order = np.argsort(-probs, kind='stable')[:k]
  return [(names[i], float(probs[i])) for i in order]


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax predict', description='Top-k classes of images from a model directory.')
  parser.add_argument('--checkpoint', required=True,
                      help='model directory (train workdir or convert output)')
  parser.add_argument('--top_k', type=int, default=5)
  parser.add_argument('images', nargs='+', help='image files (any format PIL reads)')
  args = parser.parse_args(argv)
  if args.top_k < 1:
    raise UserError(f'--top_k={args.top_k}: expected an integer >= 1')
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  spec, params, meta = checkpoint.load_model(args.checkpoint)
  preprocessing = meta.get('preprocessing') or {'image_size': spec.default_image_size}
  names = class_names(meta, spec.num_classes)

  loaded, failed = [], 0
  for path in args.images:
    try:
      loaded.append((path, load_image(path, preprocessing, spec.in_channels)))
    except UserError as e:
      print(f'{path}: error: {e}', file=sys.stderr)
      failed += 1
  if loaded:
    probs = softmax(logits(spec, params, np.stack([x for _, x in loaded])))
    k = min(args.top_k, spec.num_classes)
    for (path, _), p in zip(loaded, probs):
      print(path)
      for name, prob in top_k(p, k, names):
        print(f'  {prob:.4f}  {name}')
  if failed:
    print(f'{failed} of {len(args.images)} image(s) could not be read', file=sys.stderr)
  return 1 if failed else 0
