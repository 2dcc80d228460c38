"""`squeezejax bench`: train/eval/input throughput, MFU and, optionally, PyTorch.

  squeezejax bench                                  # squeezenet1_1@224 b32, small@32 b128
  squeezejax bench --compare=torch --json=bench.json
  squeezejax bench --model=squeezenet1_0 --batch_size=64 --dtype=bfloat16
  squeezejax bench --model=squeezenet_small --image_size=28 --spec.in_channels=1  # F-MNIST

Each case is the trainer's config (`configs.base_config()`, config.model = the
preset, the `--spec.FIELD=VALUE` flags on config.spec, `configs.spec_from_config`)
with plain SGD. For each, in one process: the trainer's own jitted step
(`step.make_train_step`, state donated, explicit shardings over every device) on a
fixed float32 batch; the trainer's eval step; the compile time of both; the input
pipeline alone (the trainer's in-memory path: host gather, prefetch, global batch,
on-device crop_flip augmentation); and model FLOPs utilisation against a float32
matmul peak measured on the same devices in the same run. Every number is taken
after compilation and ends with a device synchronisation; the host never waits on
the device inside a timing window except at its end.

With `--compare=torch` the same network, `torch_reference.SqueezeNet(spec)` (the
spec in torchvision's module tree: torchvision's own module for squeezenet1_0/1_1),
trains in PyTorch on the same images, labels and initial weights, with the same loss
(cross-entropy) and optimizer (SGD, momentum 0.9, the same weight decay), in each of
`--torch_configs` (`TORCH_CONFIGS`: eager NCHW, eager channels_last, torch.compile).
JAX, PyTorch and input windows are interleaved and each figure is a median over
windows, so a busy machine slows all of them alike; a ratio is the median of
per-window ratios. The headline ratio is against the fastest PyTorch configuration,
which the table and JSON name; a torch.compile that fails is recorded, not fatal.
The JSON and the table also name the CPU and its vector/matrix flags. See
docs/performance.md for results and what was tried.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from squeezejax import cli, configs, data, files, parallel, step_profile
from squeezejax.timing import block, matmul_peak_gflops, timed
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax import step as step_lib
from squeezejax.errors import UserError

DEFAULT_CASES = (('squeezenet1_1', 224, 32), ('squeezenet_small', 32, 128))
LEARNING_RATE = 1e-3  # small and constant: the timed steps must not diverge
WEIGHT_DECAY = 2e-4  # the paper's; torch's SGD(weight_decay=) adds the same L2 gradient
MOMENTUM = 0.9
# PyTorch's CPU set-ups: eager NCHW (its default), eager with the model and images in
# torch.channels_last (NHWC in memory, oneDNN's preferred convolution layout), and
# torch.compile (default mode, Inductor) of the forward and loss on NCHW images.
TORCH_CONFIGS = ('eager', 'channels_last', 'compile')


@dataclasses.dataclass(frozen=True)
class Case:
  model: str  # a preset name of squeezejax.spec.PRESETS
  spec: spec_lib.SqueezeNetSpec
  image_size: int
  batch_size: int
  config: ml_collections.ConfigDict  # the trainer's, for the step and optimizer


# -- squeezejax: the trainer's step, eval step and input path --------------------------


def case_config(model: str, spec_flags: dict[str, str] | None = None, **fields
                ) -> tuple[ml_collections.ConfigDict, spec_lib.SqueezeNetSpec]:
  """The trainer's config of a case (plain SGD with momentum and weight decay at a
  constant rate, `--spec.FIELD=VALUE` flags on config.spec, then `fields`) and its
  network."""
  config = configs.base_config()
  config.update(dict(model=model, optimizer='sgd', lr=LEARNING_RATE, schedule='constant',
                     warmup_steps=0, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                     grad_clip=0.0, freeze_backbone=False, seed=0, accum_steps=1))
  config.update(fields)
  flags = dict(spec_flags or {})
  # num_classes and in_channels are the dataset's in a config: here they are flags too.
  counts = {k: configs.parse_value(flags.pop(k)) for k in configs.FROM_DATASET if k in flags}
  try:
    configs.apply_overrides(config, {f'spec.{k}': v for k, v in flags.items()})
  except UserError as e:  # name the flag as it was typed
    raise UserError(str(e).replace('--config.spec.', '--spec.')) from None
  return config, configs.spec_from_config(config, **counts)


class JaxCase:
  """Compiled train and eval steps of one case, with their state and batch."""

  def __init__(self, case: Case, dtype: str, mesh, images: np.ndarray, labels: np.ndarray,
               cpu_convolutions: str = 'auto'):
    self.mesh = mesh
    spec, size, config = case.spec, case.image_size, case.config
    self.splits = step_lib.batch_splits(config, mesh)
    model = model_lib.create(spec, seed=0, dtype=step_lib.DTYPES[dtype],
                             formulation=config.layers)
    graphdef, _ = nnx.split(model)
    params, batch_stats = model_lib.split_weights(model)
    self.initial_params = jax.device_get(params)  # host copy: the state gets donated
    tx = step_lib.make_optimizer(config, step_lib.make_schedule(config, 1), params, spec.head)
    # The trainer's layout: its parameters one vector where step.flat_optimizer says.
    unravel = step_lib.unraveler(params) if step_lib.flat_optimizer(config) else None
    self._unravel = unravel and jax.jit(unravel, out_shardings=parallel.replicated(mesh),
                                        compiler_options=parallel.run_once_compiler_options())
    if unravel:
      params = step_lib.ravel(params)
    state = {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params),
             'step': jnp.int32(0), 'seed': step_lib.seeds(config)}
    shardings = parallel.state_shardings(mesh, state, fsdp=False)
    batch_sharding = parallel.batch_sharding(mesh)
    # The steps take it, but apply it only to uint8 batches: this one is float32.
    prep = data.Preprocessing(size, (0.5,) * spec.in_channels, (0.25,) * spec.in_channels)
    self.batch = parallel.global_batch(mesh, {'image': images, 'label': labels})
    self.eval_batch = parallel.global_batch(
        mesh, {'image': images, 'label': labels, 'mask': np.ones(len(labels), np.float32)})

    train_step = parallel.jit(
        step_lib.make_train_step(graphdef, tx, config, prep, self.splits, unravel),
        cpu_convolutions,
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
    eval_step = parallel.jit(step_lib.make_eval_step(graphdef, prep), cpu_convolutions,
                             in_shardings=(parallel.replicated(mesh), batch_sharding),
                             out_shardings=parallel.replicated(mesh))
    with jax.set_mesh(mesh):
      start = time.perf_counter()
      self.train_step = train_step.lower(state, self.batch).compile()
      self.compile_train_s = time.perf_counter() - start
      weights = self._weights(state)
      start = time.perf_counter()
      self.eval_step = eval_step.lower(weights, self.eval_batch).compile()
      self.compile_eval_s = time.perf_counter() - start
    self.state = jax.device_put(state, shardings)
    # First calls (allocation, thread pools); the losses let tests check that both
    # sides train the same network.
    self.losses = [float(jax.device_get(self.train(1)['loss'])) for _ in range(2)]
    block(self.evaluate(1))

  def train(self, steps: int):
    metrics, run_ahead = None, parallel.RunAhead()
    for _ in range(steps):
      self.state, metrics = self.train_step(self.state, self.batch)
      run_ahead.add(metrics)
    return metrics

  def evaluate(self, steps: int):
    sums, run_ahead, weights = None, parallel.RunAhead(), self._weights(self.state)
    for _ in range(steps):
      sums = self.eval_step(weights, self.eval_batch)
      run_ahead.add(sums)
    return sums

  def _weights(self, state):  # what the eval step takes: parameters and BatchNorm statistics
    params = state['params'] if self._unravel is None else self._unravel(state['params'])
    return model_lib.merge_weights(params, state['batch_stats'])


class InputCase:
  """The trainer's in-memory input path alone, on random uint8 images of the case's shape."""

  def __init__(self, case: Case, mesh, seed: int = 0):
    spec, size, batch = case.spec, case.image_size, case.batch_size
    rng = np.random.default_rng(seed)
    n, channels = 4 * batch, spec.in_channels
    dataset = data.ArrayDataset(
        images=rng.integers(0, 256, (n, size, size, channels), np.uint8),
        labels=rng.integers(0, spec.num_classes, n).astype(np.int32),
        num_classes=spec.num_classes, class_names=tuple(map(str, range(spec.num_classes))),
        mean=(0.5,) * channels, std=(0.25,) * channels)
    self.mesh = mesh
    self.batches = data.prefetch(data.InMemoryBatches(dataset, batch, seed)(0))
    self.augment = jax.jit(lambda images, step: data.augment(
        images, jax.random.fold_in(jax.random.key(seed), step), kind='crop_flip',
        image_size=size, mean=dataset.mean, std=dataset.std))
    self.step = 0
    block(self.run(1))

  def run(self, steps: int):
    out, run_ahead = None, parallel.RunAhead()
    for _ in range(steps):
      batch = parallel.global_batch(self.mesh, next(self.batches))
      out = (self.augment(batch['image'], self.step), batch['label'])
      run_ahead.add(out)
      self.step += 1
    return out


def torch_train_step(case: Case, params: dict, images: np.ndarray, labels: np.ndarray,
                     config: str, dtype: str = 'float32'):
  """PyTorch's train step for `case` in one of TORCH_CONFIGS, with bench's optimizer
  (bfloat16 under torch.autocast)."""
  from squeezejax import torch_reference  # pylint: disable=g-import-not-at-top
  return torch_reference.TrainStep(case.spec, params, images, labels, config, lr=LEARNING_RATE,
                                   momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                   threads=parallel.cpu_count(), dtype=dtype)


def torch_version() -> str | None:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch.__version__


def _error_text(error: Exception, limit: int = 2000) -> str:
  text = f'{type(error).__name__}: {error}'
  return text if len(text) <= limit else text[:limit] + ' ...'


# -- One case, all measurements interleaved --------------------------------------------


def run_case(case: Case, *, dtype: str, compare: str, mesh, peak_gflops: float,
             windows: int, steps: int, cpu_convolutions: tuple[str, ...] = ('auto',),
             torch_configs: tuple[str, ...] = TORCH_CONFIGS, profile_steps: int = 0,
             say: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """One result per `cpu_convolutions` choice, all timed in the same interleaved windows
  (with `compare='torch'`, against each of `torch_configs`); with `profile_steps`, each
  result also has a `profile` of that many steps (step_profile), after the timing."""
  spec, size, batch = case.spec, case.image_size, case.batch_size
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, size, size, spec.in_channels), np.float32)
  labels = rng.integers(0, spec.num_classes, batch).astype(np.int32)

  say(f'{case.model} {size}px batch {batch} {dtype}: compiling')
  jax_cases = {conv: JaxCase(case, dtype, mesh, images, labels, conv)
               for conv in cpu_convolutions}
  initial_params = next(iter(jax_cases.values())).initial_params
  input_case = InputCase(case, mesh)
  torch_cases, torch_errors = {}, {}
  for config in (torch_configs if compare == 'torch' else ()):
    if config != 'compile':
      torch_cases[config] = torch_train_step(case, initial_params, images, labels, config, dtype)
      continue
    say('  torch.compile: compiling')
    try:  # Inductor needs a working C++ toolchain; without one the others still run
      torch_cases[config] = torch_train_step(case, initial_params, images, labels, config, dtype)
    except Exception as e:  # pylint: disable=broad-except
      torch_errors[config] = _error_text(e)
      say(f'  torch.compile failed, left out: {torch_errors[config].splitlines()[0]}')

  times = {'input': []}
  times.update({(conv, kind): [] for conv in jax_cases for kind in ('train', 'eval')})
  times.update({('torch', config): [] for config in torch_cases})
  for _ in range(windows):
    with jax.set_mesh(mesh):
      for conv, jax_case in jax_cases.items():
        times[conv, 'train'].append(timed(jax_case.train, steps, block))
        times[conv, 'eval'].append(timed(jax_case.evaluate, steps, block))
    times['input'].append(timed(input_case.run, steps, block))
    for config, torch_case in torch_cases.items():
      times['torch', config].append(timed(torch_case.train, steps, lambda loss: loss.item()))
  torch_runs = {config: {'times': times.get(('torch', config)), 'error': torch_errors.get(config),
                         'losses': torch_cases[config].losses if config in torch_cases else None}
                for config in (torch_configs if compare == 'torch' else ())}
  results = [_result(case, dtype, mesh, peak_gflops, windows, steps, conv, jax_cases[conv],
                     times[conv, 'train'], times[conv, 'eval'], times['input'], torch_runs)
             for conv in jax_cases]
  if profile_steps:
    say(f'  profiling {profile_steps} steps')
    for result, jax_case in zip(results, jax_cases.values()):
      with jax.set_mesh(mesh):
        result['profile'] = step_profile.profile_case(
            jax_case, torch_cases.get(result['torch_best']), profile_steps, parallel.cpu_count())
  return results


def _result(case: Case, dtype: str, mesh, peak_gflops: float, windows: int, steps: int,
            conv: str, jax_case: JaxCase, train_times: list[float], eval_times: list[float],
            input_times: list[float], torch_runs: dict[str, dict[str, Any]]
            ) -> dict[str, Any]:
  spec, size, batch = case.spec, case.image_size, case.batch_size
  rate = lambda seconds: statistics.median(steps * batch / t for t in seconds)
  macs = spec.cost(size)['macs']
  train_img_s, eval_img_s = rate(train_times), rate(eval_times)
  # Model FLOPs: 2 per MAC forward, backward twice the forward (input and weight
  # gradients), as in the usual MFU accounting; the data-input gradient of conv1
  # is not computed but is counted, as everyone counts it.
  train_gflops = train_img_s * 6 * macs / 1e9
  result = {
      'model': case.model, 'image_size': size, 'batch_size': batch, 'dtype': dtype,
      'layout': getattr(spec, 'layout', spec.family), 'spec': spec.to_dict(),
      'params': spec.cost(size)['params'],
      'cpu_convolutions': conv if jax.default_backend() == 'cpu' else None,
      'batch_splits': jax_case.splits,
      'macs_per_image': macs, 'devices': mesh.size,
      'device_kind': jax.devices()[0].device_kind,
      'squeezejax_img_s': train_img_s, 'eval_img_s': eval_img_s,
      'input_img_s': rate(input_times),
      'compile_train_s': jax_case.compile_train_s, 'compile_eval_s': jax_case.compile_eval_s,
      'train_gflops': train_gflops, 'eval_gflops': eval_img_s * 2 * macs / 1e9,
      'peak_matmul_gflops': peak_gflops, 'mfu': train_gflops / peak_gflops,
      'torch_img_s': None, 'ratio': None, 'torch_best': None, 'torch': {},
      'windows': windows, 'steps_per_window': steps,
      'train_img_s_windows': [steps * batch / t for t in train_times],
      'squeezejax_losses': jax_case.losses,  # of the warm-up steps, as each torch entry's
  }
  result['input_to_train'] = result['input_img_s'] / train_img_s
  for config, run in torch_runs.items():
    entry = {'img_s': None, 'ratio': None, 'img_s_windows': None, 'losses': run['losses'],
             'error': run['error']}
    if run['times']:
      entry.update(img_s=rate(run['times']),
                   ratio=statistics.median(t / j for j, t in zip(train_times, run['times'])),
                   img_s_windows=[steps * batch / t for t in run['times']])
    result['torch'][config] = entry
  timed_configs = [c for c, entry in result['torch'].items() if entry['img_s'] is not None]
  if timed_configs:  # the headline: against the fastest PyTorch configuration
    best = max(timed_configs, key=lambda c: result['torch'][c]['img_s'])
    entry = result['torch'][best]
    result.update(torch_best=best, torch_img_s=entry['img_s'], ratio=entry['ratio'],
                  torch_img_s_windows=entry['img_s_windows'])
  return result


# -- CLI -------------------------------------------------------------------------------


def parse_cases(models: str, image_size: int, batch_size: int, spec_flags: dict[str, str],
                batch_splits: int = 0) -> list[Case]:
  if not models:
    if image_size or batch_size:
      raise UserError('--image_size/--batch_size need --model: the default run is '
                      + ', '.join(f'{m}@{s} batch {b}' for m, s, b in DEFAULT_CASES))
    chosen = DEFAULT_CASES
  else:
    chosen = [(name, image_size, batch_size) for name in models.split(',')]
  cases = []
  for name, size, batch in chosen:
    config, spec = case_config(name, spec_flags, batch_splits=batch_splits)
    size = size or spec.default_image_size
    spec.check_image_size(size)
    config.batch_size = batch = batch or (32 if size >= 128 else 128)
    if batch < 1:
      raise UserError(f'--batch_size={batch} is not allowed: expected an integer >= 1')
    cases.append(Case(name, spec, size, batch, config))
  return cases


def table(results: list[dict[str, Any]], cpu: dict[str, Any] | None = None,
          peak_gflops: float | None = None) -> str:
  """Markdown: the CPU and matmul peak, one row per result (the ratio against the fastest
  PyTorch configuration, named), then each PyTorch configuration's own row."""
  show = lambda v, f: '' if v is None else format(v, f)
  lines = []
  if cpu is not None:
    lines.append(f'CPU: {parallel.describe_cpu(cpu)}, {parallel.cpu_count()} cores')
  if peak_gflops is not None:
    lines.append(f'float32 matmul peak: {peak_gflops:.1f} GFLOP/s')
  if lines:
    lines.append('')
  lines += ['| model | px | batch | dtype | convs | splits | train img/s | best torch '
            '| torch img/s | ratio | eval img/s | input img/s | compile s | train GFLOP/s '
            '| MFU |',
            '|---|--:|--:|---|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|']
  for r in results:
    lines.append(
        f'| {r["model"]} | {r["image_size"]} | {r["batch_size"]} | {r["dtype"]} | '
        f'{r["cpu_convolutions"] or ""} | {r["batch_splits"]} | '
        f'{r["squeezejax_img_s"]:.1f} | {r["torch_best"] or ""} | '
        f'{show(r["torch_img_s"], ".1f")} | {show(r["ratio"], ".2f")} | '
        f'{r["eval_img_s"]:.1f} | {r["input_img_s"]:.0f} | '
        f'{r["compile_train_s"] + r["compile_eval_s"]:.1f} | {r["train_gflops"]:.1f} | '
        f'{100 * r["mfu"]:.1f}% |')
  if any(r['torch'] for r in results):
    lines += ['', '| model | px | batch | convs | PyTorch | torch img/s | ratio | |',
              '|---|--:|--:|---|---|--:|--:|---|']
    for r in results:
      for config, entry in r['torch'].items():
        note = 'best' if config == r['torch_best'] else ''
        if entry['error']:
          note = 'failed: ' + entry['error'].splitlines()[0][:100].replace('|', '/')
        lines.append(f'| {r["model"]} | {r["image_size"]} | {r["batch_size"]} | '
                     f'{r["cpu_convolutions"] or ""} | {config} | '
                     f'{show(entry["img_s"], ".1f")} | {show(entry["ratio"], ".2f")} | '
                     f'{note} |')
  return '\n'.join(lines)


def environment() -> dict[str, Any]:
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'device_kind': jax.devices()[0].device_kind, 'devices': jax.device_count(),
          'cpu_count': parallel.cpu_count(), 'torch': torch_version(),
          'platform': platform.platform(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'host': parallel.configure_host(),
          'load_average': os.getloadavg() if hasattr(os, 'getloadavg') else None}


def main(argv: list[str]) -> int:
  argv, spec_flags = configs.split_overrides(argv, '--spec.')
  parser = cli.ArgumentParser(prog='squeezejax bench', description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='',
                      help='comma-separated presets (default: squeezenet1_1@224 b32 and '
                           'squeezenet_small@32 b128)')
  parser.add_argument('--image_size', type=int, default=0, help='0 = the layout default')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='0 = 32 at >= 128 px, else 128')
  parser.add_argument('--dtype', choices=configs.DTYPES, default='float32',
                      help='compute dtype (parameters stay float32)')
  parser.add_argument('--compare', choices=('none', 'torch'), default='none')
  parser.add_argument('--torch_configs', default=','.join(TORCH_CONFIGS),
                      help='with --compare=torch, the PyTorch set-ups to time (comma-separated): '
                           + ', '.join(TORCH_CONFIGS))
  parser.add_argument('--json', default='', help='write {"results": [...]} here')
  parser.add_argument('--windows', type=int, default=5, help='timing windows per measurement')
  parser.add_argument('--steps', type=int, default=3, help='steps per timing window')
  parser.add_argument('--num_devices', type=int, default=0, help='0 = every device')
  parser.add_argument('--peak_size', type=int, default=2048, help='matmul size for the peak')
  parser.add_argument('--batch_splits', type=int, default=0,
                      help="the trainer's config.batch_splits (0 = automatic)")
  parser.add_argument('--profile', type=int, default=0, metavar='STEPS',
                      help='then profile this many steps of each case and of the fastest torch')
  parser.add_argument('--cpu_convolutions', default='auto',
                      help='CPU convolution library, or a comma-separated list to time '
                           'side by side: ' + ', '.join(configs.CPU_CONVOLUTIONS))
  args = parser.parse_args(argv)
  if args.windows < 1 or args.steps < 1 or args.peak_size < 1:
    raise UserError('--windows, --steps and --peak_size must be integers >= 1')
  step_profile.check_steps(args.profile)
  if args.json:
    files.check_output_file(args.json, '--json')  # before minutes of measuring
  # 'auto' as what it picked, in the table and the JSON; a bad name is a one-line error
  convs = tuple(dict.fromkeys(parallel.resolve_convolutions(c) or c
                              for c in args.cpu_convolutions.split(',')))
  torch_configs = tuple(dict.fromkeys(args.torch_configs.split(',')))
  for config in torch_configs:
    if config not in TORCH_CONFIGS:
      raise UserError(f'--torch_configs={args.torch_configs!r} is not allowed: expected a '
                      f'comma-separated subset of {", ".join(TORCH_CONFIGS)}')
  cases = parse_cases(args.model, args.image_size, args.batch_size, spec_flags,
                      args.batch_splits)
  if args.compare == 'torch':
    if torch_version() is None:
      raise UserError('--compare=torch needs PyTorch: pip install "squeezejax[bench]"')
  mesh = parallel.make_mesh(args.num_devices)
  for case in cases:
    parallel.check_batch(mesh, case.batch_size)
    step_lib.batch_splits(case.config, mesh)  # its one-line error before any compile

  peak = matmul_peak_gflops(mesh, args.peak_size)
  cpu = parallel.cpu_info()
  print(f'{mesh.size} x {jax.devices()[0].device_kind}, {parallel.cpu_count()} CPU cores '
        f'({parallel.describe_cpu(cpu)}); float32 matmul peak {peak:.1f} GFLOP/s', flush=True)
  results = []
  for case in cases:
    results.extend(run_case(case, dtype=args.dtype, compare=args.compare, mesh=mesh,
                            peak_gflops=peak, windows=args.windows, steps=args.steps,
                            cpu_convolutions=convs, torch_configs=torch_configs,
                            profile_steps=args.profile, say=lambda m: print(m, flush=True)))
  print(table(results, cpu, peak))
  for profiled in [r for r in results if 'profile' in r]:
    print('\n' + step_profile.table(profiled))
  if args.json:
    report = {'results': results, 'peak_matmul_gflops': peak, 'cpu': cpu,
              'environment': environment()}
    files.write_json(args.json, report)
    print(f'wrote {args.json}')
  return 0
