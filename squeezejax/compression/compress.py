"""`squeezejax compress`: Deep Compression of a trained model directory.

  squeezejax compress --checkpoint=runs/fmnist --workdir=runs/fmnist_dc \\
      --config.density='conv1=1,*=0.33' --config.code_bits=6

  1. pruning, `prune_iterations` times: remove the smallest weights of every layer
     (density targets, reached in equal steps, or Han's quality x std threshold),
     then retrain `retrain_steps` with the pruned weights held at 0;
  2. weight sharing: per-layer k-means (2**code_bits - 1 centroids, linear init),
     then `share_steps` of centroid fine-tuning (gradients summed per cluster);
  3. storage: WORKDIR/model.net in the authors' format (or its Huffman variant) and
     model.json, a model directory that predict, eval, export and finetune read by
     decompressing; `compress_report.json` holds the per-layer accounting and the
     decompressed model's evaluation; `squeezejax summary --checkpoint=WORKDIR`
     prints the table.

Retraining is the ordinary trainer (`train.train_and_evaluate`) with
`config.compressed` set, so masks and cluster assignments live in its train state.
Each stage is a model directory under WORKDIR/stages; a rerun skips finished stages.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from squeezejax import cli, configs, convert, files
from squeezejax.compression import accounting
from squeezejax.compression import format as format_lib
from squeezejax.compression import prune, share, weights
from squeezejax.errors import UserError

REPORT_JSON = 'compress_report.json'
STAGES = 'stages'


def compress_config() -> ml_collections.ConfigDict:
  """Every field of a compression run; `train` is the retraining's trainer config."""
  c = ml_collections.ConfigDict()
  c.density = '*=0.33'  # per-layer density targets: 'PATTERN=D,...' (prune.layer_densities)
  c.quality = 0.0  # > 0: Han's threshold quality x std per iteration instead of densities
  c.prune_iterations = 2
  c.retrain_steps = 200  # per pruning iteration
  c.code_bits = 8  # 2**code_bits codebook entries per layer (entry 0 is the pruned 0.0)
  c.index_bits = 4  # relative index width: a filler per 2**index_bits positions of a gap
  c.huffman = False  # Huffman-code both streams (a second file format)
  c.kmeans_iterations = 30
  c.share_steps = 200  # centroid fine-tuning
  c.share_lr = 1e-4  # its learning rate (the summed gradients of a cluster are large)
  c.train = configs.base_config()
  c.train.dataset = ''  # '' = the dataset recorded in the model directory
  c.train.total_steps = 1  # each stage sets its own
  c.train.optimizer, c.train.schedule = 'sgd', 'cosine'
  c.train.lr = 0.004  # retraining starts from a trained network: a tenth of the usual
  c.train.weight_decay = 0.0
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 1
  return c


def check(c: ml_collections.ConfigDict, names: list[str]) -> dict[str, float]:
  """Every compression field against what it allows (before anything is written)."""
  format_lib.check_bits(c.code_bits, 'config.code_bits')
  format_lib.check_bits(c.index_bits, 'config.index_bits')
  for key in ('prune_iterations', 'retrain_steps', 'share_steps', 'kmeans_iterations'):
    value = c[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise UserError(f'config.{key}={value!r} is not allowed: expected an integer >= 0')
  if c.prune_iterations < 1:
    raise UserError(f'config.prune_iterations={c.prune_iterations} is not allowed: expected '
                    'an integer >= 1')
  if isinstance(c.quality, bool) or not isinstance(c.quality, (int, float)) or c.quality < 0:
    raise UserError(f'config.quality={c.quality!r} is not allowed: expected a number >= 0')
  return prune.layer_densities(c.density, names)


# -- stages ----------------------------------------------------------------------------


def _kernels(spec, params) -> list[tuple[str, tuple, np.ndarray]]:
  """(layer name, parameter path, HWIO kernel) of every stored layer."""
  out = []
  for layer, (_, path, _) in zip(weights.layers(spec), convert._convs(spec)):  # pylint: disable=protected-access
    node = params
    for part in path:
      node = node[part]
    out.append((layer.name, path, np.asarray(node['kernel'], np.float32)))
  return out


def _with_kernels(params, updates: dict[tuple, np.ndarray]) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(np.asarray, params)
  for path, kernel in updates.items():
    node = params
    for part in path:
      node = node[part]
    node['kernel'] = kernel
  return params


def prune_step(spec, params, densities: dict[str, float], quality: float, t: int, steps: int
               ) -> dict:
  """Prunes each layer to its density after iteration t of `steps` (linear in t), or by
  Han's threshold."""
  updates = {}
  for name, path, kernel in _kernels(spec, params):
    if quality > 0:
      mask = prune.threshold_mask(kernel, quality)
    else:
      mask = prune.magnitude_mask(kernel, 1 - (1 - densities[name]) * t / steps) & (kernel != 0)
    updates[path] = np.where(mask, kernel, 0).astype(np.float32)
  return _with_kernels(params, updates)


def _stage(train_config, init_dir: str, workdir: str, steps: int, compressed: str, lr: float):
  """Retrains from `init_dir` into `workdir` (skipped when already finished)."""
  from squeezejax import train  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(workdir, 'result.json')):
    return
  c = ml_collections.ConfigDict(train_config.to_dict())
  c.init_from, c.compressed, c.total_steps, c.num_epochs, c.lr = (
      init_dir, compressed, steps, None, lr)
  c.checkpoint_every = min(c.checkpoint_every, steps)
  c.lock()
  train.train_and_evaluate(c, workdir)


def _save_params(directory: str, spec, params, meta) -> None:
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(directory, checkpoint.MODEL_JSON)):
    checkpoint.save_model(directory, spec, params, meta)


def compress(c: ml_collections.ConfigDict, source: str, workdir: str) -> dict[str, Any]:
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  spec, meta = checkpoint.read_model_json(source)
  densities = check(c, [layer.name for layer in weights.layers(spec)])
  train_config = c.train
  if not train_config.dataset:
    if not meta.get('dataset'):
      raise UserError(f'{source!r} records no dataset: set --config.train.dataset')
    train_config.dataset = meta['dataset']
  files.check_output_dir(workdir, '--workdir')
  # A finished run has its report; without one (interrupted after the file was written)
  # the rerun writes the same file again from its finished stages.
  if os.path.exists(os.path.join(workdir, REPORT_JSON)):
    raise UserError(f'--workdir={workdir!r} already holds a compressed model: expected a new '
                    'directory')
  stages = os.path.join(workdir, STAGES)
  _, params, _ = checkpoint.load_model(source)
  current = source
  # 1. pruning, iterated with retraining
  for t in range(1, c.prune_iterations + 1):
    init_dir = os.path.join(stages, f'prune{t}_init')
    _save_params(init_dir, spec, prune_step(spec, params, densities, c.quality, t,
                                            c.prune_iterations), meta)
    current = init_dir
    if c.retrain_steps:
      current = os.path.join(stages, f'prune{t}')
      _stage(train_config, init_dir, current, c.retrain_steps, 'pruned', train_config.lr)
    _, params, _ = checkpoint.load_model(current)
  # 2. weight sharing: k-means, then centroid fine-tuning
  codes, codebooks, updates = {}, {}, {}
  for name, path, kernel in _kernels(spec, params):
    codebooks[name], dense = share.quantize(kernel, c.code_bits, c.kmeans_iterations)
    codes[name] = dense  # HWIO, fixed from here on
    updates[path] = codebooks[name][dense]
  shared_dir = os.path.join(stages, 'share_init')
  _save_params(shared_dir, spec, _with_kernels(params, updates), meta)
  current = shared_dir
  if c.share_steps:
    current = os.path.join(stages, 'share')
    _stage(train_config, shared_dir, current, c.share_steps, 'shared', c.share_lr)
  final_spec, params, final_meta = checkpoint.load_model(current)
  # 3. storage: the fine-tuned centroids are the (equal) values of each cluster
  encoded, spread = [], 0.0
  biases = dict(zip((layer.name for layer in weights.layers(spec)),
                    (b for _, b in weights.kernels_oihw(spec, params))))
  for (name, _, kernel), layer in zip(_kernels(spec, params), weights.layers(spec)):
    dense = codes[name]
    sums = np.bincount(dense.ravel(), kernel.ravel().astype(np.float64), 1 << c.code_bits)
    counts = np.bincount(dense.ravel(), minlength=1 << c.code_bits)
    codebook = np.where(counts > 0, sums / np.maximum(counts, 1), codebooks[name])
    codebook[0] = 0.0
    spread = max(spread, float(np.abs(codebook[dense] - kernel).max()))
    encoded.append(format_lib.encode(layer, dense.transpose(3, 2, 0, 1), codebook, biases[name],
                                     c.index_bits))
  meta_out = {k: v for k, v in final_meta.items() if k != 'compression'}
  meta_out['source'] = f'squeezejax compress of {os.path.abspath(source)}'
  weights.save(workdir, final_spec, encoded, meta_out, code_bits=c.code_bits,
               index_bits=c.index_bits, huffman=c.huffman)
  rows = accounting.layer_sizes(encoded, c.code_bits, c.index_bits, c.huffman)
  report = {'config': c.to_dict(), 'source': os.path.abspath(source),
            'cluster_spread': spread, **accounting.summary(rows),
            'eval': evaluate(workdir, train_config)}
  files.write_json(os.path.join(workdir, REPORT_JSON), report)
  return report


def evaluate(directory: str, train_config) -> dict[str, float]:
  """Top-1/top-5 of a model directory (decompressed) on the config's eval split."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from squeezejax import checkpoint, data, parallel, step  # pylint: disable=g-import-not-at-top
  from squeezejax import model as model_lib  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(train_config.to_dict())
  mesh = parallel.make_mesh(c.num_devices)
  spec, params, _ = checkpoint.load_model(directory, parallel.replicated(mesh))
  source = data.make_input(c)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.create(spec)))
  eval_step = parallel.jit(step.make_eval_step(graphdef, source.preprocessing),
                           c.cpu_convolutions)
  with jax.set_mesh(mesh):
    return step.evaluate(eval_step, params, source.eval_batches(), mesh)


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(prog='squeezejax compress', description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True, help='model directory to compress')
  parser.add_argument('--workdir', required=True, help='where the compressed model goes')
  parser.add_argument('--config', default=None,
                      help='optional FILE.py[:arg] whose get_config returns compress_config()')
  args = parser.parse_args(argv)
  if args.config:
    c = configs.call(configs.load_module(args.config.partition(':')[0]), 'get_config',
                     args.config)
  else:
    c = compress_config()
  c.lock()
  configs.apply_overrides(c, overrides)
  report = compress(c, args.checkpoint, args.workdir)
  s = report
  print(f'wrote {args.workdir}: {s["bytes"]:,} bytes (paper label {s["label_mb"]:g}MB), '
        f'{100 * s["density"]:.1f}% of weights kept, {s["reduction"]:.1f}x smaller than '
        f'float32; top1 {s["eval"]["top1"]:.4f}')
  return 0


def summary_table(directory: str) -> str:
  """The per-layer accounting table of a compressed model directory."""
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  spec, meta = checkpoint.read_model_json(directory)
  if not weights.is_compressed(meta):
    raise UserError(f'{directory!r} holds no compressed model (no model.net): expected the '
                    'workdir of squeezejax compress or a converted .net file')
  m = meta['compression']
  encoded = weights.load_encoded(directory, spec, meta)
  return accounting.table(accounting.layer_sizes(encoded, m['code_bits'], m['index_bits'],
                                                 m['huffman']))

