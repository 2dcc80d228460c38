"""Exported files in their own runtimes: accuracy, batch-1 latency and memory.

  squeezejax eval --model=sq.tflite            # top-1 on the test split the sidecar names
  squeezejax eval --model=sq.onnx --config=experiments/fashion_mnist.py:quick

Each file `squeezejax export` writes has a sidecar `FILE.json` (format,
preprocessing, dataset); it decides the runtime:

  tflite, tflite-int8   LiteRT's interpreter (`ai-edge-litert`; on a core install
                        TensorFlow's tf.lite, the same runtime); an integer input
                        is quantized with the interpreter's own scale and zero
                        point (real = scale * (q - zero_point)), the output
                        dequantized the same way
  onnx                  onnxruntime, CPU execution provider (NCHW input)
  stablehlo             JAX (`jax.export.deserialize`, under jit)

Images are the dataset's uint8 split normalised on the host with the sidecar's
mean/std (`data.normalize`), the same arrays for every format. Latency and peak
memory are measured in a fresh process per file, so that neither the parent's
TensorFlow and JAX nor its data count against the runtime.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

import numpy as np

from squeezejax.errors import UserError

FORMATS = ('tflite', 'tflite-int8', 'onnx', 'stablehlo')
RUNTIMES = {'tflite': 'LiteRT', 'tflite-int8': 'LiteRT', 'onnx': 'onnxruntime',
            'stablehlo': 'JAX'}
EVAL_BATCH = 256  # images per call where the file takes any batch (StableHLO)
EDGE_EXTRA = "pip install 'squeezejax[edge]'"


def read_sidecar(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise UserError(f'--model={path!r}: no such file')
  try:
    with open(path + '.json') as f:
      sidecar = json.load(f)
  except FileNotFoundError:
    raise UserError(f'--model={path!r} has no {os.path.basename(path)}.json beside it '
                    '(written by `squeezejax export`)') from None
  except ValueError as e:
    raise UserError(f'{path}.json is not readable JSON ({e})') from None
  fmt = sidecar.get('format')
  if fmt not in FORMATS:
    raise UserError(f'{path}.json: format {fmt!r} is not one of {", ".join(FORMATS)}')
  return sidecar


def require(module: str, package: str, load: bool = True):
  """The module, or a one-line UserError naming the extra; `load=False` only checks
  (tf2onnx imports TensorFlow, which must first be configured by `data.tensorflow()`)."""
  try:
    if not load:
      if importlib.util.find_spec(module) is None:
        raise ImportError(module)
      return None
    return importlib.import_module(module)
  except ImportError:
    raise UserError(f'this needs {package}: {EDGE_EXTRA}') from None


def runtime_name(fmt: str) -> str:
  if RUNTIMES[fmt] == 'LiteRT' and not _litert()[0].__name__.startswith('ai_edge_litert'):
    from squeezejax import data  # pylint: disable=g-import-not-at-top
    return f'tf.lite (tensorflow {data.tensorflow().__version__})'
  package = {'LiteRT': 'ai-edge-litert', 'onnxruntime': 'onnxruntime', 'JAX': 'jax'}[
      RUNTIMES[fmt]]
  return f'{package} {importlib.metadata.version(package)}'


# -- LiteRT -------------------------------------------------------------------------------


def _litert():
  """(module with Interpreter, OpResolverType)."""
  try:
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    return litert, litert.OpResolverType
  except ImportError:  # a core install: the same runtime, as TensorFlow's deprecated tf.lite
    from squeezejax import data  # pylint: disable=g-import-not-at-top
    lite = data.tensorflow().lite
    return lite, lite.experimental.OpResolverType


def interpreter(model: str | bytes, threads: int | None = None, delegates: bool = True):
  """LiteRT's interpreter for a file or flatbuffer; `delegates=False` keeps the plain
  builtin kernels (XNNPACK, the default delegate, replaces nodes when tensors are allocated)."""
  litert, resolvers = _litert()
  kwargs = {'model_path' if isinstance(model, str) else 'model_content': model}
  if not delegates:
    kwargs['experimental_op_resolver_type'] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
  with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
    warnings.simplefilter('ignore')
    return litert.Interpreter(num_threads=threads, **kwargs)


def quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
  """Float values -> the tensor's dtype; an integer tensor with its own scale and zero point."""
  dtype = details['dtype']
  if not np.issubdtype(dtype, np.integer):
    return np.asarray(x, dtype)
  scale, zero_point = details['quantization']
  if not scale:
    raise ValueError(f'integer tensor {details["name"]!r} has no quantization parameters')
  info = np.iinfo(dtype)  # round and saturate: a bare cast would truncate and wrap
  return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, details: dict[str, Any]) -> np.ndarray:
  if not np.issubdtype(details['dtype'], np.integer):
    return np.asarray(q, np.float32)
  scale, zero_point = details['quantization']
  return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def float_tensors(model: str | bytes) -> list[str]:
  """'OP: tensor (dtype)' for every float tensor an op of a TFLite model reads or writes."""
  it = interpreter(model, delegates=False)
  tensors = {t['index']: t for t in it.get_tensor_details()}
  found = []
  for op in it._get_ops_details():  # pylint: disable=protected-access  # no public op list
    for i in [*op['inputs'], *op['outputs']]:
      if i >= 0 and np.issubdtype(tensors[i]['dtype'], np.floating):
        found.append(f'{op["op_name"]}: {tensors[i]["name"]} '
                     f'({np.dtype(tensors[i]["dtype"]).name})')
  return found


@contextlib.contextmanager
def quiet_native_logs():
  """LiteRT's C++ logger prints 'INFO: Created TensorFlow Lite XNNPACK delegate' whatever
  TF_CPP_MIN_LOG_LEVEL says; it shows only with `squeezejax --verbose`."""
  from squeezejax import cli  # pylint: disable=g-import-not-at-top
  if cli.verbose():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def tflite_fn(model: str | bytes, threads: int | None = None) -> Callable:
  it = interpreter(model, threads)
  inp, = it.get_input_details()
  out, = it.get_output_details()
  with quiet_native_logs():
    it.allocate_tensors()

  def run(images: np.ndarray) -> np.ndarray:
    it.set_tensor(inp['index'], quantize(images, inp))
    it.invoke()
    return dequantize(it.get_tensor(out['index']), out)
  return run


# -- onnxruntime, JAX ---------------------------------------------------------------------


def onnx_fn(model: str | bytes, threads: int | None = None) -> Callable:
  ort = require('onnxruntime', 'onnxruntime')
  options = ort.SessionOptions()
  if threads:
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
  options.log_severity_level = 3
  session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  # NHWC in, as every other format; the file itself takes torchvision's NCHW.
  return lambda images: session.run(None, {name: np.ascontiguousarray(
      np.asarray(images, np.float32).transpose(0, 3, 1, 2))})[0]


def stablehlo_fn(model: str | bytes) -> Callable:
  import jax  # pylint: disable=g-import-not-at-top
  if isinstance(model, str):
    with open(model, 'rb') as f:
      model = f.read()
  call = jax.jit(jax.export.deserialize(bytearray(model)).call)
  return lambda images: np.asarray(call(np.asarray(images, np.float32)))


def load(model: str | bytes, fmt: str, threads: int | None = None) -> Callable:
  """images (NHWC float32, normalised; one image per call unless StableHLO) -> logits."""
  if fmt in ('tflite', 'tflite-int8'):
    return tflite_fn(model, threads)
  return onnx_fn(model, threads) if fmt == 'onnx' else stablehlo_fn(model)


def logits(fn: Callable, images: np.ndarray, fmt: str) -> np.ndarray:
  batch = EVAL_BATCH if fmt == 'stablehlo' else 1
  return np.concatenate([fn(images[i:i + batch]) for i in range(0, len(images), batch)])


# -- accuracy ----------------------------------------------------------------------------


def split_images(dataset: str, split: str, preprocessing: dict[str, Any],
                data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(normalised float32 NHWC images, labels) of an in-memory split at the model's size."""
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  if not data.is_in_memory(dataset):
    raise UserError(f'dataset {dataset!r} does not fit in memory: exported files are '
                    'evaluated on fashion_mnist, cifar10, synthetic or folder:PATH')
  arrays = data.load_arrays(dataset, split, data_dir=data_dir,
                            image_size=int(preprocessing['image_size']))
  mean = np.asarray(preprocessing.get('mean', arrays.mean), np.float32)
  std = np.asarray(preprocessing.get('std', arrays.std), np.float32)
  return data.normalize(arrays.images.astype(np.float32), mean, std), arrays.labels


def metrics(logits_: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """The trainer's eval metrics (eval_loss, top1, top5, eval_examples) from logits."""
  z = logits_.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
  top5 = np.argsort(-logits_, axis=-1, kind='stable')[:, :5]
  return {'eval_loss': float(-log_probs[np.arange(len(labels)), labels].mean()),
          'top1': float((logits_.argmax(-1) == labels).mean()),
          'top5': float((top5 == labels[:, None]).any(-1).mean()),
          'eval_examples': int(len(labels))}


def evaluate_file(path: str, config=None, *, threads: int | None = None) -> dict[str, Any]:
  """Metrics of an exported file on a full split, in its own runtime.

  The dataset is `config.dataset` (and its eval_split, data_dir) when a config is
  given, else the one recorded in the sidecar (the model's training dataset), 'test'.
  """
  sidecar = read_sidecar(path)
  dataset = config.dataset if config is not None else sidecar.get('dataset')
  if not dataset:
    raise UserError(f'{path}.json names no dataset: pass --config with the dataset')
  split = config.eval_split if config is not None else 'test'
  data_dir = (config.data_dir or None) if config is not None else None
  fn = load(path, sidecar['format'], threads)  # missing runtime: an error before the data
  images, labels = split_images(dataset, split, sidecar['preprocessing'], data_dir)
  if images.shape[1:] != tuple(sidecar['input'][1:]):
    raise UserError(f'{dataset} {split} images are {list(images.shape[1:])}, the model takes '
                    f'{sidecar["input"][1:]}')
  return {'model': path, 'format': sidecar['format'], 'runtime': runtime_name(sidecar['format']),
          'dataset': dataset, 'split': split,
          **metrics(logits(fn, images, sidecar['format']), labels)}


def eval_main(argv: list[str]) -> dict[str, Any]:
  """`squeezejax eval --model=FILE [--config=...] [--threads=N]`: the metrics as a dict."""
  from squeezejax import cli, configs  # pylint: disable=g-import-not-at-top
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(prog='squeezejax eval',
                              description='Evaluate an exported file in its own runtime.')
  parser.add_argument('--model', required=True, help='FILE.tflite|FILE.onnx|FILE.stablehlo')
  parser.add_argument('--config', default=None,
                      help='path/to/config.py[:preset] for the dataset (default: the sidecar\'s)')
  parser.add_argument('--threads', type=int, default=None, help='runtime threads')
  args = parser.parse_args(argv)
  read_sidecar(args.model)  # a bad file: one line before the config is loaded
  if overrides and not args.config:
    raise UserError('--config.* overrides need --config')
  config = configs.load(args.config, overrides) if args.config else None
  return evaluate_file(args.model, config, threads=args.threads)


# -- latency and memory (a fresh process per file) ------------------------------------------


def _memory_mib() -> dict[str, float]:
  """VmRSS (now) and VmHWM (peak since start or the last reset) of this process (Linux)."""
  found = {}
  with open('/proc/self/status') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key in ('VmRSS', 'VmHWM'):
        found[key] = int(value.split()[0]) / 1024  # kB
  return found


def _reset_peak() -> bool:
  try:  # '5' resets VmHWM to VmRSS (Linux >= 4.0), so imports do not set the peak
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _measure_child(args: dict[str, Any]) -> dict[str, Any]:
  """Runs in the child: load the runtime, then the model, then time one image per call."""
  fmt = args['format']
  if fmt == 'stablehlo':
    import jax  # pylint: disable=g-import-not-at-top,unused-import
  elif fmt == 'onnx':
    require('onnxruntime', 'onnxruntime')
  else:
    _litert()
  image = np.load(args['image'])
  peak_known = os.path.exists('/proc/self/status') and _reset_peak()
  before = _memory_mib().get('VmRSS', 0.0) if peak_known else 0.0  # runtime loaded, no model
  fn = load(args['path'], fmt, args['threads'])
  for _ in range(args['warmup']):
    fn(image)
  times, cpu = [], time.process_time()
  for _ in range(args['runs']):
    start = time.perf_counter()
    fn(image)
    times.append(time.perf_counter() - start)
  cpu = time.process_time() - cpu
  times_ms = np.asarray(times) * 1e3
  return {'latency_ms_median': float(np.median(times_ms)),
          'latency_ms_p90': float(np.percentile(times_ms, 90)),
          'runs': args['runs'], 'threads': args['threads'],
          'cpu_per_wall': cpu / sum(times),  # about the threads actually busy
          'peak_rss_mib': _memory_mib()['VmHWM'] - before if peak_known else None}


def measure_latency(path: str, fmt: str, image: np.ndarray, *, threads: int = 1,
                    warmup: int = 20, runs: int = 200) -> dict[str, Any]:
  """Batch-1 latency (median, p90) and the peak resident memory that loading and running
  the model adds to its runtime (None off Linux), measured in a new Python process.
  JAX's XLA:CPU gets the thread count through XLA_FLAGS."""
  env = dict(os.environ)
  if fmt == 'stablehlo':
    env['JAX_PLATFORMS'] = 'cpu'
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen='
                        f'{"true" if threads > 1 else "false"} '
                        f'intra_op_parallelism_threads={threads}').strip()
  with tempfile.TemporaryDirectory() as tmp:
    np.save(os.path.join(tmp, 'image.npy'), np.asarray(image[:1], np.float32))
    args = {'path': os.path.abspath(path), 'format': fmt, 'threads': threads,
            'warmup': warmup, 'runs': runs, 'image': os.path.join(tmp, 'image.npy')}
    code = ('import json, sys; from squeezejax import edge; '
            'print(json.dumps(edge._measure_child(json.loads(sys.argv[1]))))')
    proc = subprocess.run([sys.executable, '-c', code, json.dumps(args)], env=env,
                          capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'latency run of {path} failed:\n{proc.stderr[-2000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])
