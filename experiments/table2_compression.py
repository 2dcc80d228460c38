r"""Table 2 of the SqueezeNet paper on real Fashion-MNIST: AlexNet, SqueezeNet, Deep Compression.

  python experiments/table2_compression.py --workdir=runs/table2 [--seeds=2] [--preset=quick]
  squeezejax report --workdir=runs/table2      # table2.md and table2.png

Per seed, with the same trainer: train AlexNet-small (the paper's baseline, adapted to
28 px; experiments/alexnet.py's quick recipe) and SqueezeNet-small (the Fashion-MNIST
quick recipe, full width), then `squeezejax compress` SqueezeNet: prune to about a
third of the weights in retrained steps, with a per-layer profile in the spirit of the
authors' file (conv1 and the classifier whole, the 1x1s about half, the 3x3 expands
hardest: DENSITY), then share weights at 8 bits (k-means + centroid fine-tuning); the
6-bit row shares the same pruned network at 6 bits; "+ Huffman" rewrites the 6-bit file
with both streams Huffman coded (the same weights). Rows give top-1 (mean over seeds,
with min-max), the file size in bytes and the paper's MB label, and the reduction
against AlexNet-small (by label, as the paper computes it, and by bytes) and against the
float32 SqueezeNet file. A second table is at ImageNet scale: the authors' released
file, our accounting of it, and recodings of its weights.

A rerun skips finished steps (each train and compress workdir resumes or is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from squeezejax import configs, files, parallel, train
from squeezejax.compression import accounting, compress, share, weights
from squeezejax.compression import format as format_lib

HERE = os.path.dirname(os.path.abspath(__file__))
# 32.7% of SqueezeNet-small's weights. The authors' ImageNet file keeps conv1 and most
# 1x1s whole, the 3x3 expands at 30-33% and conv10 at 20% (`squeezejax summary
# --checkpoint=` of the converted file); here conv10 is tiny (10 classes), so the 1x1s,
# a quarter of the weights, are thinned instead for the network to reach a third.
DENSITY = 'conv1=1,conv10=1,*/squeeze=0.6,*/expand1x1=0.5,*/expand3x3=0.25'
PRESETS = {
    # steps of the SqueezeNet run, retraining per pruning step, centroid fine-tuning;
    # base_e = incr_e = width (128: squeezenet_small itself). AlexNet-small is
    # experiments/alexnet.py:quick.
    'quick': dict(base_steps=1500, prune_iterations=2, retrain_steps=300,
                  share_steps=200, width=128),
    # gentler pruning: three steps, longer retraining
    'long': dict(base_steps=1500, prune_iterations=3, retrain_steps=500,
                 share_steps=300, width=128),
    'test': dict(base_steps=20, prune_iterations=2, retrain_steps=4,
                 share_steps=4, width=16),
}
# The AlexNet the paper compresses (Caffe bvlc_alexnet, grouped convolutions):
# 60,965,224 float32 parameters, which the paper labels 240MB.
ALEXNET = dict(params=60_965_224, label_mb=240.0)


def base_config(preset: str, seed: int):
  c = configs.load_module(os.path.join(HERE, 'fashion_mnist.py')).get_config(
      'test' if preset == 'test' else 'quick')  # every other preset: the quick recipe
  p = PRESETS[preset]
  c.spec.base_e = c.spec.incr_e = p['width']
  c.num_epochs, c.total_steps = None, p['base_steps']
  c.warmup_steps = min(c.warmup_steps, p['base_steps'] // 10)
  c.eval_every, c.seed = 0, seed
  return c


def alexnet_config(preset: str, seed: int):
  """experiments/alexnet.py's quick preset (its test preset for the test suite)."""
  c = configs.load_module(os.path.join(HERE, 'alexnet.py')).get_config(
      'test' if preset == 'test' else 'quick')
  c.seed = seed
  return c


def trained(config, workdir: str) -> dict:
  """result.json of a training run (trained first, unless a rerun finds it finished)."""
  if not os.path.exists(os.path.join(workdir, 'result.json')):
    config.lock()
    train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'result.json')) as f:
    return json.load(f)


def float_row(name: str, seed: int, result: dict) -> dict:
  nbytes = 4 * result['params']
  return dict(row=name, seed=seed, top1=result['top1'], params=result['params'], bytes=nbytes,
              label_mb=accounting.paper_label_mb(nbytes, compressed=False))


def compress_config(preset: str, base, code_bits: int, from_pruned: bool):
  p = PRESETS[preset]
  c = compress.compress_config()
  c.density, c.code_bits = DENSITY, code_bits
  c.prune_iterations = 1 if from_pruned else p['prune_iterations']
  c.retrain_steps = 0 if from_pruned else p['retrain_steps']
  c.share_steps = p['share_steps']
  t = c.train
  for key in ('dataset', 'image_size', 'augment', 'batch_size', 'eval_batch_size',
              'batch_splits', 'seed', 'num_devices'):
    t[key] = base[key]
  t.optimizer, t.schedule, t.lr, t.warmup_steps = 'adamw', 'cosine', 1e-3, 0
  c.share_lr = 1e-4
  t.log_every = 100
  return c


def sparse_float32_bytes(encoded) -> int:
  """The pruned network as float32 values with 4-bit relative indices (the paper's
  "pruning" row, here with its index cost)."""
  return 4 * len(encoded) + sum(4 * e.entries + format_lib.packed_bytes(e.entries, 4) +
                                4 * len(e.bias) for e in encoded)


def run_seed(workdir: str, preset: str, seed: int) -> list[dict]:
  alexnet = trained(alexnet_config(preset, seed), os.path.join(workdir, f'seed{seed}', 'alexnet'))
  base_dir = os.path.join(workdir, f'seed{seed}', 'squeezenet')
  base = base_config(preset, seed)
  rows = [float_row('AlexNet-small', seed, alexnet),
          float_row('SqueezeNet-small', seed, trained(base, base_dir))]
  runs, last = {}, f'prune{PRESETS[preset]["prune_iterations"]}'  # the pruned network
  for bits, source in ((8, base_dir), (6, None)):
    out = os.path.join(workdir, f'seed{seed}', f'dc{bits}')
    if source is None:  # the 8-bit run's pruned network, shared at 6 bits
      source = os.path.join(runs[8], compress.STAGES, last)
    if not os.path.exists(os.path.join(out, compress.REPORT_JSON)):
      compress.compress(compress_config(preset, base, bits, bits != 8), source, out)
    runs[bits] = out
  with open(os.path.join(runs[8], compress.REPORT_JSON)) as f:
    dc8 = json.load(f)
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  pruned_dir = os.path.join(runs[8], compress.STAGES, last)
  spec, params, _ = checkpoint.load_model(pruned_dir)
  pruned = [format_lib.encode(layer, (w != 0).astype(np.int32), np.zeros(2), b)
            for layer, (w, b) in zip(weights.layers(spec), weights.kernels_oihw(spec, params))]
  with open(os.path.join(pruned_dir, 'result.json')) as f:
    pruned_top1 = json.load(f)['top1']
  nbytes = sparse_float32_bytes(pruned)
  rows.append(dict(row='+ pruning', seed=seed, top1=pruned_top1, bytes=nbytes,
                   label_mb=accounting.paper_label_mb(nbytes), density=dc8['density']))
  for bits in (8, 6):
    with open(os.path.join(runs[bits], compress.REPORT_JSON)) as f:
      r = json.load(f)
    rows.append(dict(row=f'+ weight sharing, {bits}-bit', seed=seed, top1=r['eval']['top1'],
                     bytes=r['bytes'], label_mb=r['label_mb'], density=r['density']))
  # + Huffman: the 6-bit network's streams Huffman coded; decoding gives the same weights.
  spec, meta = checkpoint.read_model_json(runs[6])
  encoded = weights.load_encoded(runs[6], spec, meta)
  data = format_lib.write(encoded, 6, 4, huffman=True)
  back = format_lib.read(data, weights.layers(spec), 6, 4, huffman=True)
  assert all((a.dense_codes() == b.dense_codes()).all() for a, b in zip(encoded, back))
  rows.append(dict(row='+ Huffman, 6-bit', seed=seed, top1=rows[-1]['top1'], bytes=len(data),
                   label_mb=accounting.paper_label_mb(len(data)), density=rows[-1]['density']))
  return rows


def imagenet_table() -> list[dict]:
  """The authors' file and recodings of its weights (sizes only: no ImageNet here)."""
  net = os.path.join(HERE, '..', 'tests', 'data', 'deep_compression', 'compressed_SqueezeNet.net')
  spec = weights.authors_spec()
  encoded = weights.read_file(net, spec)
  out = [dict(row='AlexNet (Caffe, float32)', bytes=4 * ALEXNET['params'],
              label_mb=ALEXNET['label_mb'], note='parameter count, not run')]
  out.append(dict(row='SqueezeNet v1.0 (float32)', bytes=4 * accounting.summary(
      accounting.layer_sizes(encoded, 8, 4))['params'], label_mb=4.8))
  out.append(dict(row="authors' compressed file (8-bit)", bytes=os.path.getsize(net),
                  label_mb=accounting.paper_label_mb(os.path.getsize(net))))
  out.append(dict(row='our accounting of it', bytes=accounting.file_bytes(
      accounting.layer_sizes(encoded, 8, 4)), label_mb=None))
  out.append(dict(row='its weights, Huffman coded (8-bit)',
                  bytes=len(format_lib.write(encoded, 8, 4, huffman=True)), label_mb=None))
  # 6-bit: the same non-zeros re-clustered (k-means, no fine-tuning: no ImageNet here)
  six = []
  for e in encoded:
    w = e.weights()
    codebook, codes = share.quantize(w, 6)
    six.append(format_lib.encode(e.layer, codes, codebook, e.bias))
  for huffman in (False, True):
    data = format_lib.write(six, 6, 4, huffman)
    out.append(dict(row=f'its weights re-clustered at 6 bits{", Huffman" * huffman}',
                    bytes=len(data), label_mb=None))
  for r in out:
    r['label_mb'] = r['label_mb'] or accounting.paper_label_mb(r['bytes'])
    r['vs_alexnet_label'] = ALEXNET['label_mb'] / r['label_mb']
    r['vs_alexnet_bytes'] = 4 * ALEXNET['params'] / r['bytes']
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--preset', default='quick', choices=sorted(PRESETS))
  args = parser.parse_args()
  if args.seeds < 1:
    parser.error(f'--seeds={args.seeds} is not allowed: expected an integer >= 1')
  parallel.configure_host()  # as the CLI does: a JAX device per core, before JAX starts
  t0 = time.time()
  rows = []
  for seed in range(args.seeds):
    rows += run_seed(args.workdir, args.preset, seed)
  record = {'preset': args.preset, 'seeds': args.seeds, 'density': DENSITY,
            'alexnet_steps': alexnet_config(args.preset, 0).total_steps,
            **PRESETS[args.preset], 'rows': rows, 'imagenet': imagenet_table(),
            'wall_s': time.time() - t0}
  files.write_json(os.path.join(args.workdir, 'table2.json'), record)
  print(f'wrote {os.path.join(args.workdir, "table2.json")} in {record["wall_s"]:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
