"""Export a model directory for deployment: TFLite (float or full integer), ONNX, StableHLO.

  squeezejax export --checkpoint=models/sq11 --format=tflite --out=sq11.tflite
  squeezejax export --checkpoint=models/sq11 --format=tflite --quantize=float16 --out=f16.tflite
  squeezejax export --checkpoint=runs/fmnist --format=tflite-int8 --out=fmnist_int8.tflite
  squeezejax export --checkpoint=models/sq11 --format=onnx --out=sq11.onnx
  squeezejax export --checkpoint=models/sq11 --format=stablehlo --out=sq11.stablehlo
  squeezejax export --checkpoint=runs/fmnist --report --out=runs/fmnist/edge

Every file takes preprocessed images (the model directory's `preprocessing`,
also written to the sidecar `OUT.json`) and returns logits. TFLite and ONNX take
one image per call (the edge case; a symbolic batch would lower the model's
strided-slice pools to gathers, which TFLite's StableHLO import does not
support), StableHLO any batch. TFLite goes through jax2tf (the model lowered to
StableHLO inside a TF graph) and TensorFlow's TFLite converter, builtin ops only,
so the file runs on the plain LiteRT runtime:

  tflite --quantize=none|float16|int8   float32; float16 weights; int8 weights with
                                        float activations (dynamic range)
  tflite-int8    full integer (Jacob et al. 2018): int8 weights per output channel,
                 int8 activations, int32 biases, int8 input and output. Activation
                 ranges come from `--calibration` images of the model's training split
                 (or `--representative=DATASET`); a model with any float tensor left
                 is refused, never written.
  onnx           the float32 TFLite graph through tf2onnx; NCHW float32 input
                 (torchvision's layout), checked with onnx.checker.
  stablehlo      `jax.export`'s serialisation (no TensorFlow); `jax.export.deserialize`.

After writing, the file is run in its own runtime (squeezejax.edge) and its logits
compared with JAX's: on seeded random images, or for tflite-int8 on held-out
training images (random noise is outside the calibrated ranges). `--report` writes
every format into a directory and measures each on the full test split: size,
top-1 against JAX float32, batch-1 latency and peak memory (report.md, report.json).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Callable

import numpy as np

from squeezejax import cli, edge, files
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

FORMATS = edge.FORMATS
QUANTIZE = ('none', 'float16', 'int8')
CALIBRATION = 500  # representative images: the TFLite guide suggests 100-500
CALIBRATION_SPLIT = 'train'
ONNX_OPSET = 17
PAPER_SIZE_MB = 4.8  # SqueezeNet v1.0, float32 (Table 2)
# --report: (format, quantize, file name, label in the table)
REPORT_FILES = (
    ('stablehlo', 'none', 'model.stablehlo', 'StableHLO float32 (JAX jit)'),
    ('tflite', 'none', 'model_float32.tflite', 'TFLite float32'),
    ('tflite', 'float16', 'model_float16.tflite', 'TFLite float16 weights'),
    ('tflite', 'int8', 'model_dynamic_int8.tflite', 'TFLite int8 weights (dynamic range)'),
    ('tflite-int8', 'none', 'model_int8.tflite', 'TFLite full integer int8'),
    ('onnx', 'none', 'model.onnx', 'ONNX float32'),
)


def logits_fn(spec: spec_lib.SqueezeNetSpec, params) -> Callable:
  """images (NHWC float32) -> logits, with the parameters baked in as constants."""
  from squeezejax import model as model_lib  # pylint: disable=g-import-not-at-top
  model = model_lib.from_params(spec, params)
  return lambda images: model(images)  # no dropout key: inference


def input_shape(spec: spec_lib.SqueezeNetSpec, meta: dict, image_size: int | None
                ) -> tuple[int, int, int]:
  size = image_size or meta.get('preprocessing', {}).get('image_size') or spec.default_image_size
  spec.check_image_size(size)
  return (size, size, spec.in_channels)


# -- checks before any work -----------------------------------------------------------


def check_format(format: str, quantize: str = 'none') -> None:  # pylint: disable=redefined-builtin
  if format not in FORMATS:
    raise UserError(f'--format={format!r} is not allowed: expected one of {", ".join(FORMATS)}')
  if quantize not in QUANTIZE:
    raise UserError(f'--quantize={quantize!r} is not allowed: expected one of '
                    f'{", ".join(QUANTIZE)}')
  if format != 'tflite' and quantize != 'none':
    raise UserError(f'--quantize={quantize!r} is only for --format=tflite (full integer: '
                    '--format=tflite-int8)')
  if format == 'onnx':
    edge.require('tf2onnx', 'tf2onnx', load=False)


def check_out(out: str) -> None:
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise UserError(f'--out={out!r}: directory {parent!r} does not exist')


def representative_dataset(meta: dict, dataset: str | None) -> str:
  """The dataset whose training split calibrates a full-integer model."""
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  name = dataset or meta.get('dataset')
  if not name:
    raise UserError('--format=tflite-int8 needs representative images and the model directory '
                    'records no training dataset: pass --representative=DATASET')
  if not data.is_in_memory(name):
    raise UserError(f'--representative={name!r} does not fit in memory: use fashion_mnist, '
                    'cifar10, synthetic or folder:PATH')
  data.check_split(name, CALIBRATION_SPLIT)
  return name


def representative_images(dataset: str, meta: dict, shape: tuple[int, int, int],
                          count: int) -> np.ndarray:
  """`count` seeded training images, normalised as the model was trained."""
  images, _ = edge.split_images(dataset, CALIBRATION_SPLIT,
                                {**meta.get('preprocessing', {}), 'image_size': shape[0]})
  if images.shape[1:] != shape:
    raise UserError(f'{dataset} images are {list(images.shape[1:])}, the model takes '
                    f'{list(shape)}')
  pick = np.random.default_rng(0).permutation(len(images))[:count]
  return images[np.sort(pick)]


# -- formats ---------------------------------------------------------------------------


def to_stablehlo(fn: Callable, shape: tuple[int, int, int]) -> bytes:
  """jax.export serialisation with a symbolic batch dimension."""
  import jax  # pylint: disable=g-import-not-at-top
  batch, = jax.export.symbolic_shape('batch')
  exported = jax.export.export(jax.jit(fn))(
      jax.ShapeDtypeStruct((batch, *shape), np.float32))
  return bytes(exported.serialize())


def to_tflite(fn: Callable, shape: tuple[int, int, int], quantize: str = 'none',
              representative: np.ndarray | None = None) -> bytes:
  """A TFLite flatbuffer (builtin ops only) for one image per call; full integer
  (int8 in, out and inside) when `representative` images are given."""
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  tf = data.tensorflow()  # TensorFlow configured (quiet, off accelerators) before jax2tf imports it
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  tf_fn = tf.function(
      jax2tf.convert(fn, with_gradient=False),
      input_signature=[tf.TensorSpec((1, *shape), tf.float32, name='images')],
      autograph=False)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [tf_fn.get_concrete_function()], tf_fn)
  if quantize != 'none' or representative is not None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: int8 weights (dynamic range)
  if quantize == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  if representative is None:
    with edge.quiet_native_logs():  # the converter's C++ logs
      return converter.convert()
  converter.representative_dataset = lambda: ([x[None]] for x in representative)
  # INT8 builtins only: the converter fails on an op it cannot quantize instead of
  # leaving it in float; integer I/O, else a float quantize/dequantize pair remains.
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  with warnings.catch_warnings(), edge.quiet_native_logs():
    warnings.simplefilter('ignore')  # "Statistics for quantized inputs were expected": none
    try:
      blob = converter.convert()
    except Exception as e:  # pylint: disable=broad-except  # ConverterError and friends
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise UserError(f'full-integer conversion failed (an op cannot be quantized?): '
                      f'{first[:300]}') from None
  floats = edge.float_tensors(blob)
  if floats:
    raise UserError(f'the int8 model keeps {len(floats)} float tensor(s), e.g. {floats[0]}; '
                    'refusing a silent float fallback')
  return blob


def to_onnx(tflite_float: bytes) -> bytes:
  """ONNX (NCHW float32 input) from a float32 TFLite flatbuffer, via tf2onnx."""
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  data.tensorflow()  # tf2onnx imports TensorFlow: let it find it configured
  tf2onnx = edge.require('tf2onnx', 'tf2onnx')
  import onnx  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'model.tflite')
    files.write_atomic(path, tflite_float)
    name = edge.interpreter(path).get_input_details()[0]['name']
    with warnings.catch_warnings(), edge.quiet_native_logs():
      warnings.simplefilter('ignore')
      model, _ = tf2onnx.convert.from_tflite(path, opset=ONNX_OPSET, inputs_as_nchw=[name])
  onnx.checker.check_model(model)
  return model.SerializeToString()


def run_tflite(model: bytes | str, images: np.ndarray) -> np.ndarray:
  """Logits of a TFLite model (bytes or path; float or int8 I/O) for NHWC images."""
  return edge.logits(edge.tflite_fn(model), np.asarray(images, np.float32), 'tflite')


def run_onnx(model: bytes | str, images: np.ndarray) -> np.ndarray:
  return edge.logits(edge.onnx_fn(model), np.asarray(images, np.float32), 'onnx')


def run_stablehlo(model: bytes, images: np.ndarray) -> np.ndarray:
  return edge.stablehlo_fn(model)(images)


# -- export -----------------------------------------------------------------------------


def export(spec: spec_lib.SqueezeNetSpec, params, meta: dict, out: str, *,
           format: str = 'tflite', quantize: str = 'none',  # pylint: disable=redefined-builtin
           image_size: int | None = None, check_batch: int = 2,
           calibration: int = CALIBRATION, representative: str | None = None
           ) -> dict[str, Any]:
  """Writes `out` and `out.json`; returns sizes and the parity check against JAX."""
  check_format(format, quantize)
  check_out(out)
  if format == 'tflite-int8':
    if calibration < 1:
      raise UserError(f'--calibration={calibration}: expected an integer >= 1')
    representative = representative_dataset(meta, representative)
  shape = input_shape(spec, meta, image_size)
  fn = logits_fn(spec, params)
  if format == 'tflite-int8':
    calib = representative_images(representative, meta, shape, calibration + check_batch)
    images, calib = calib[:check_batch], calib[check_batch:]
    blob = to_tflite(fn, shape, representative=calib)
  else:
    images = np.random.default_rng(0).standard_normal((check_batch, *shape)).astype(np.float32)
    if format == 'stablehlo':
      blob = to_stablehlo(fn, shape)
    else:
      blob = to_tflite(fn, shape, quantize)
      if format == 'onnx':
        blob = to_onnx(blob)
  files.write_atomic(out, blob)
  sidecar = {
      'format': format, 'quantize': quantize,
      'input': [1 if format != 'stablehlo' else 'batch', *shape],
      'layout': 'NCHW' if format == 'onnx' else 'NHWC',
      'input_dtype': 'int8' if format == 'tflite-int8' else 'float32', 'output': 'logits',
      'preprocessing': meta.get('preprocessing'), 'class_names': meta.get('class_names'),
      'dataset': meta.get('dataset'), 'spec': spec.to_dict(),
  }
  if format == 'tflite-int8':
    it = edge.interpreter(blob)
    (inp,), (outp,) = it.get_input_details(), it.get_output_details()
    sidecar['quantization'] = {  # real = scale * (q - zero_point)
        'input': dict(zip(('scale', 'zero_point'), inp['quantization'])),
        'output': dict(zip(('scale', 'zero_point'), outp['quantization'])),
        'calibration': {'dataset': representative, 'split': CALIBRATION_SPLIT,
                        'images': len(calib)}}
  files.write_json(out + '.json', sidecar)

  expected = np.asarray(fn(images))
  got = edge.logits(edge.load(out, format), images, format)
  cost = spec.cost(shape[0])
  return {
      'path': out, 'format': format, 'quantize': quantize, 'bytes': len(blob),
      'size_mib': len(blob) / 2**20, 'params': cost['params'],
      'params_size_mib': cost['size_mib'], 'input_shape': list(shape),
      'check_images': 'training' if format == 'tflite-int8' else 'random',
      'max_abs_diff': float(np.abs(got - expected).max()),
      'max_abs_logit': float(np.abs(expected).max()),
      'top1_agreement': float((got.argmax(-1) == expected.argmax(-1)).mean()),
  }


def describe(result: dict[str, Any]) -> str:
  kind = result['format'] + ('' if result['quantize'] == 'none' else f' ({result["quantize"]})')
  return (f'wrote {result["path"]}: {kind}, {result["bytes"]:,} bytes = '
          f'{result["size_mib"]:.2f} MiB (float32 parameters {result["params_size_mib"]:.2f} MiB '
          f'for {result["params"]:,}; the paper\'s SqueezeNet: {PAPER_SIZE_MB}MB at float32)\n'
          f'check vs JAX on {result["input_shape"]} {result["check_images"]} inputs: max |logit '
          f'diff| {result["max_abs_diff"]:.2e} (max |logit| {result["max_abs_logit"]:.2f}), top-1 '
          f'agreement {result["top1_agreement"]:.0%}')


# -- report -----------------------------------------------------------------------------


def report(spec: spec_lib.SqueezeNetSpec, params, meta: dict, out_dir: str, *,
           split: str = 'test', threads: int = 1, warmup: int = 20, runs: int = 200,
           calibration: int = CALIBRATION, representative: str | None = None,
           dataset: str | None = None) -> list[dict[str, Any]]:
  """Every format in `out_dir`, each measured on a full split; writes report.json/.md."""
  check_out(out_dir)
  dataset = dataset or meta.get('dataset')
  if not dataset:
    raise UserError('--report needs a dataset to evaluate on and the model directory records '
                    'none: pass --dataset=DATASET')
  representative = representative_dataset(meta, representative or dataset)
  edge.require('tf2onnx', 'tf2onnx', load=False)
  if threads < 1 or runs < 1 or warmup < 0 or calibration < 1:
    raise UserError('--threads, --runs and --calibration must be >= 1')
  from squeezejax import predict  # pylint: disable=g-import-not-at-top
  preprocessing = {**meta.get('preprocessing', {}),
                   'image_size': input_shape(spec, meta, None)[0]}
  images, labels = edge.split_images(dataset, split, preprocessing)
  reference = predict.logits(spec, params, images, batch_size=edge.EVAL_BATCH)
  ref = edge.metrics(reference, labels)
  os.makedirs(out_dir, exist_ok=True)
  rows = []
  for fmt, quantize, name, label in REPORT_FILES:
    path = os.path.join(out_dir, name)
    export(spec, params, meta, path, format=fmt, quantize=quantize, calibration=calibration,
           representative=representative)
    got = edge.logits(edge.load(path, fmt, os.cpu_count()), images, fmt)
    scores = edge.metrics(got, labels)
    rows.append({
        'file': name, 'label': label, 'format': fmt, 'quantize': quantize,
        'runtime': edge.runtime_name(fmt), 'bytes': os.path.getsize(path),
        **scores, 'top1_delta': scores['top1'] - ref['top1'],
        'agreement': float((got.argmax(-1) == reference.argmax(-1)).mean()),
        'max_abs_diff': float(np.abs(got - reference).max()),
        **edge.measure_latency(path, fmt, images[:1], threads=threads, warmup=warmup,
                               runs=runs)})
  result = {'dataset': dataset, 'split': split, 'reference': {'label': 'JAX float32', **ref},
            'params': spec.cost(preprocessing['image_size'])['params'], 'rows': rows}
  files.write_json(os.path.join(out_dir, 'report.json'), result)
  files.write_atomic(os.path.join(out_dir, 'report.md'), table(result))
  return rows


def table(result: dict[str, Any]) -> str:
  """The report as a Markdown table."""
  base = next(r['bytes'] for r in result['rows'] if r['file'] == 'model_float32.tflite')
  ref = result['reference']
  lines = [f'{result["dataset"]} {result["split"]} ({ref["eval_examples"]:,} images), '
           f'JAX float32 top-1 {ref["top1"]:.2%}; latency: batch 1, '
           f'{result["rows"][0]["runs"]} runs, {result["rows"][0]["threads"]} thread(s)', '',
           '| format | runtime | size | vs float32 | top-1 | delta | agree | median ms '
           '| p90 ms | peak MiB |', '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in result['rows']:
    lines.append(
        f'| {r["label"]} | {r["runtime"]} | {r["bytes"] / 2**10:,.0f} KiB | '
        f'{r["bytes"] / base:.0%} | {r["top1"]:.2%} | {r["top1_delta"] * 100:+.2f} | '
        f'{r["agreement"]:.2%} | {r["latency_ms_median"]:.3f} | {r["latency_ms_p90"]:.3f} | '
        f'{"-" if r["peak_rss_mib"] is None else format(r["peak_rss_mib"], ".1f")} |')
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax export', description='Export a model directory for deployment.')
  parser.add_argument('--checkpoint', required=True,
                      help='model directory (train workdir or convert output)')
  parser.add_argument('--format', default='tflite', help=f'one of {", ".join(FORMATS)}')
  parser.add_argument('--quantize', default='none',
                      help=f'tflite weights: {", ".join(QUANTIZE)} (int8 = dynamic range)')
  parser.add_argument('--out', required=True,
                      help='file to write (and OUT.json beside it); with --report a directory')
  parser.add_argument('--image_size', type=int, default=None,
                      help='input side (default: the model directory\'s preprocessing)')
  parser.add_argument('--calibration', type=int, default=CALIBRATION,
                      help='tflite-int8: representative training images')
  parser.add_argument('--representative', default=None,
                      help='tflite-int8: dataset of the representative images (default: the '
                      'model\'s training dataset)')
  parser.add_argument('--report', action='store_true',
                      help='every format into --out (a directory), measured on the test split')
  parser.add_argument('--dataset', default=None,
                      help='--report: dataset to evaluate on (default: the model\'s)')
  parser.add_argument('--split', default='test', help='--report: split to evaluate')
  parser.add_argument('--threads', type=int, default=1, help='--report: runtime threads')
  parser.add_argument('--runs', type=int, default=200, help='--report: timed batch-1 calls')
  args = parser.parse_args(argv)
  if not args.report:  # before loading anything
    check_format(args.format, args.quantize)
  check_out(args.out)
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  spec, meta = checkpoint.read_model_json(args.checkpoint)
  if args.report:
    if not (args.dataset or meta.get('dataset')):
      raise UserError('--report needs a dataset to evaluate on and the model directory records '
                      'none: pass --dataset=DATASET')
    representative_dataset(meta, args.representative or args.dataset)
  elif args.format == 'tflite-int8':
    representative_dataset(meta, args.representative)
  spec, params, meta = checkpoint.load_model(args.checkpoint)
  if args.report:
    report(spec, params, meta, args.out, split=args.split, threads=args.threads, runs=args.runs,
           calibration=args.calibration, representative=args.representative,
           dataset=args.dataset)
    with open(os.path.join(args.out, 'report.md')) as f:
      print(f.read(), end='')
    return 0
  result = export(spec, params, meta, args.out, format=args.format, quantize=args.quantize,
                  image_size=args.image_size, calibration=args.calibration,
                  representative=args.representative)
  print(describe(result))
  return 0
