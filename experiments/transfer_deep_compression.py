r"""Transfer from the authors' ImageNet SqueezeNet (Deep Compression file) vs from scratch.

  python scripts/make_image_folder.py --dataset=fashion_mnist --per_class=100 --out=runs/fmnist_folder
  python experiments/transfer_deep_compression.py --data=runs/fmnist_folder --workdir=runs/transfer

Both runs are `squeezejax finetune` with the same budget (steps, batch, image size,
recipe) on the same folder (every 5th image held out); they differ only in the init:

  pretrained  the decoded compressed_SqueezeNet.net (conv10 replaced by a new head).
              The trainer normalises pixels by the folder's mean/std, while the Caffe
              weights expect BGR pixels minus (104, 117, 123); conv1 has no padding,
              so that affine change of input is folded exactly into conv1's weights
              and bias.
  scratch     the same network, randomly initialised (Caffe's xavier init).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np
from flax import nnx

from squeezejax import checkpoint, data, files, finetune
from squeezejax import model as model_lib
from squeezejax.compression import weights

HERE = os.path.dirname(os.path.abspath(__file__))
NET = os.path.join(HERE, '..', 'tests', 'data', 'deep_compression', 'compressed_SqueezeNet.net')


def fold_input_normalisation(params: dict, mean: np.ndarray, std: np.ndarray,
                             mean_bgr: np.ndarray) -> dict:
  """conv1 for inputs (p / 255 - mean) / std in RGB, from conv1 for BGR p - mean_bgr."""
  params = jax.tree.map(np.asarray, params)
  kernel = params['conv1']['kernel'][:, :, ::-1, :]  # HWIO, input channels now RGB
  scale = 255.0 * np.asarray(std, np.float32)  # p = scale * x + shift
  shift = 255.0 * np.asarray(mean, np.float32) - np.asarray(mean_bgr, np.float32)[::-1]
  params['conv1'] = {
      'kernel': (kernel * scale[None, None, :, None]).astype(np.float32),
      'bias': (params['conv1']['bias'] + np.einsum('hwio,i->o', kernel, shift)).astype(
          np.float32)}
  return params


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='image folder (make_image_folder.py)')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--image_size', type=int, default=227)
  parser.add_argument('--lr', type=float, default=1e-3)
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  spec = weights.authors_spec()
  imagenet = weights.to_params(spec, weights.read_file(NET, spec))
  train_split = data.load_arrays(f'folder:{args.data}', 'train', image_size=args.image_size)
  meta = {'preprocessing': {'kind': 'dataset', 'mean': list(train_split.mean),
                            'std': list(train_split.std), 'image_size': args.image_size}}
  scratch = nnx.to_pure_dict(nnx.state(model_lib.create(spec, seed=0), nnx.Param))
  inits = {
      'pretrained': fold_input_normalisation(imagenet, train_split.mean, train_split.std,
                                             weights.CAFFE_PREPROCESSING['mean_bgr']),
      'scratch': jax.tree.map(np.asarray, scratch)}
  out = {}
  for name, params in inits.items():
    init_dir = os.path.join(args.workdir, f'{name}_init')
    if not os.path.exists(os.path.join(init_dir, checkpoint.MODEL_JSON)):
      checkpoint.save_model(init_dir, spec, params, meta)
    run = os.path.join(args.workdir, name)
    report_path = os.path.join(run, finetune.REPORT_JSON)
    if not os.path.exists(report_path):
      config = finetune.finetune_config(init_dir, args.data, steps=args.steps,
                                        batch_size=args.batch_size, lr=args.lr,
                                        image_size=args.image_size)
      finetune.finetune(config, run)
    with open(report_path) as f:
      report = json.load(f)
    out[name] = {'accuracy': report['accuracy'], 'examples': report['examples'],
                 'wall_s': report['train_result']['wall_s']}
    print(f'{name}: test accuracy {report["accuracy"]:.4f} on {report["examples"]} images')
  out['setting'] = {k: getattr(args, k) for k in ('steps', 'batch_size', 'image_size', 'lr')}
  out['setting']['data'] = os.path.abspath(args.data)
  files.write_json(os.path.join(args.workdir, 'transfer.json'), out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
