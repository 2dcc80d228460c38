"""Export a model directory for deployment: TFLite (edge) or a jax.export artefact.

  squeezejax export --checkpoint=models/sq11 --format=tflite --out=sq11.tflite
  squeezejax export --checkpoint=models/sq11 --format=tflite --quantize=int8 --out=sq11_int8.tflite
  squeezejax export --checkpoint=models/sq11 --format=stablehlo --out=sq11.stablehlo

Both artefacts take preprocessed NHWC float32 images (the model directory's
`preprocessing`, also written to `OUT.json` beside the file) and return logits:
the StableHLO artefact any batch size, the TFLite file one image per call (the
edge case; a symbolic batch would lower the model's strided-slice pools to
gathers, which TFLite's StableHLO import does not support). TFLite goes through jax2tf (the model lowered to StableHLO
inside a TF graph) and TensorFlow's TFLite converter; only builtin TFLite ops
are used, so the file runs on the plain TFLite / LiteRT runtime.
`--quantize=float16` halves the file, `int8` (dynamic range: int8 weights,
float activations) quarters it. The `stablehlo` format is `jax.export`'s
serialisation (no TensorFlow); reload it with `jax.export.deserialize`.

After writing, the exported model is run on seeded random images and its
logits compared with JAX's; the file's size is printed next to the paper's
4.8MB (SqueezeNet's float32 parameters).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import numpy as np

from squeezejax import cli, files
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

FORMATS = ('tflite', 'stablehlo')
QUANTIZE = ('none', 'float16', 'int8')
PAPER_SIZE_MB = 4.8  # SqueezeNet v1.0, float32 (Table 2)



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


# -- formats ---------------------------------------------------------------------------


def to_stablehlo(fn: Callable, shape: tuple[int, int, int]) -> bytes:
  """jax.export serialisation with a symbolic batch dimension."""
  import jax  # pylint: disable=g-import-not-at-top
  batch, = jax.export.symbolic_shape('batch')
  exported = jax.export.export(jax.jit(fn))(
      jax.ShapeDtypeStruct((batch, *shape), np.float32))
  return bytes(exported.serialize())


def to_tflite(fn: Callable, shape: tuple[int, int, int], quantize: str = 'none') -> bytes:
  """A TFLite flatbuffer (builtin ops only) for one image per call."""
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  tf = data.tensorflow()  # TensorFlow kept off accelerators
  h, w, c = shape
  tf_fn = tf.function(
      jax2tf.convert(fn, with_gradient=False),
      input_signature=[tf.TensorSpec((1, h, w, c), tf.float32, name='images')],
      autograph=False)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [tf_fn.get_concrete_function()], tf_fn)
  if quantize != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights (dynamic range)
  if quantize == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def run_tflite(model: bytes | str, images: np.ndarray) -> np.ndarray:
  """Logits of a TFLite model (bytes or path) for a batch of NHWC images."""
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  tf = data.tensorflow()
  with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT deprecation notice
    warnings.simplefilter('ignore')
    if isinstance(model, str):
      interpreter = tf.lite.Interpreter(model_path=model)
    else:
      interpreter = tf.lite.Interpreter(model_content=model)
  inp, = interpreter.get_input_details()
  out, = interpreter.get_output_details()
  interpreter.allocate_tensors()
  logits = []
  for image in np.asarray(images, np.float32):  # the file takes one image per call
    interpreter.set_tensor(inp['index'], image[None])
    interpreter.invoke()
    logits.append(interpreter.get_tensor(out['index'])[0].copy())
  return np.stack(logits)


def run_stablehlo(model: bytes, images: np.ndarray) -> np.ndarray:
  import jax  # pylint: disable=g-import-not-at-top
  return np.asarray(jax.export.deserialize(bytearray(model)).call(images))


def export(spec: spec_lib.SqueezeNetSpec, params, meta: dict, out: str, *,
           format: str = 'tflite', quantize: str = 'none',  # pylint: disable=redefined-builtin
           image_size: int | None = None, check_batch: int = 2) -> dict[str, Any]:
  """Writes `out` and `out.json`; returns sizes and the parity check against JAX."""
  if format not in FORMATS:
    raise UserError(f'--format={format!r} is not allowed: expected one of {", ".join(FORMATS)}')
  if quantize not in QUANTIZE:
    raise UserError(f'--quantize={quantize!r} is not allowed: expected one of '
                      f'{", ".join(QUANTIZE)}')
  if format == 'stablehlo' and quantize != 'none':
    raise UserError(f'--quantize={quantize!r} is only for --format=tflite')
  shape = input_shape(spec, meta, image_size)
  fn = logits_fn(spec, params)
  blob = to_tflite(fn, shape, quantize) if format == 'tflite' else to_stablehlo(fn, shape)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  files.write_atomic(out, blob)
  sidecar = {
      'format': format, 'quantize': quantize,
      'input': [1 if format == 'tflite' else 'batch', *shape],
      'input_dtype': 'float32', 'output': 'logits',
      'preprocessing': meta.get('preprocessing'), 'class_names': meta.get('class_names'),
      'spec': spec.to_dict(),
  }
  files.write_json(out + '.json', sidecar)

  # Parity on seeded images drawn like normalised inputs.
  images = np.random.default_rng(0).standard_normal((check_batch, *shape)).astype(np.float32)
  expected = np.asarray(fn(images))
  got = run_tflite(out, images) if format == 'tflite' else run_stablehlo(blob, images)
  cost = spec.cost(shape[0])
  return {
      'path': out, 'format': format, 'quantize': quantize, 'bytes': len(blob),
      'size_mib': len(blob) / 2**20, 'params': cost['params'],
      'params_size_mib': cost['size_mib'], 'input_shape': list(shape),
      'max_abs_diff': float(np.abs(got - expected).max()),
      'max_abs_logit': float(np.abs(expected).max()),
      'top1_agreement': float((got.argmax(-1) == expected.argmax(-1)).mean()),
  }


def describe(result: dict[str, Any]) -> str:
  kind = result['format'] + ('' if result['quantize'] == 'none' else f' ({result["quantize"]})')
  return (f'wrote {result["path"]}: {kind}, {result["bytes"]:,} bytes = '
          f'{result["size_mib"]:.2f} MiB (float32 parameters {result["params_size_mib"]:.2f} MiB '
          f'for {result["params"]:,}; the paper\'s SqueezeNet: {PAPER_SIZE_MB}MB at float32)\n'
          f'check vs JAX on {result["input_shape"]} inputs: max |logit diff| '
          f'{result["max_abs_diff"]:.2e} (max |logit| {result["max_abs_logit"]:.2f}), top-1 '
          f'agreement {result["top1_agreement"]:.0%}')


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax export', description='Export a model directory for deployment.')
  parser.add_argument('--checkpoint', required=True,
                      help='model directory (train workdir or convert output)')
  parser.add_argument('--format', default='tflite', help=f'one of {", ".join(FORMATS)}')
  parser.add_argument('--quantize', default='none',
                      help=f'tflite weights: {", ".join(QUANTIZE)} (int8 = dynamic range)')
  parser.add_argument('--out', required=True, help='file to write (and OUT.json beside it)')
  parser.add_argument('--image_size', type=int, default=None,
                      help='input side (default: the model directory\'s preprocessing)')
  args = parser.parse_args(argv)
  if args.format not in FORMATS:  # before loading anything
    raise UserError(f'--format={args.format!r} is not allowed: expected one of '
                      f'{", ".join(FORMATS)}')
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  spec, params, meta = checkpoint.load_model(args.checkpoint)
  result = export(spec, params, meta, args.out, format=args.format, quantize=args.quantize,
                  image_size=args.image_size)
  print(describe(result))
  return 0
