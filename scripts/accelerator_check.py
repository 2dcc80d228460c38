"""One prepared check of squeezejax on a GPU or TPU: JSON and a Markdown table.

  python scripts/accelerator_check.py --out=accelerator_check      # GPU/TPU: planned < 8 min
  python scripts/accelerator_check.py --tiny --out=/tmp/check      # CPU, tiny sizes (the tests)

Every number is measured in this run, on every device JAX sees:
  devices        kind and count;
  peaks          bfloat16 and float32 matmul GFLOP/s (`timing.matmul_peak_gflops`);
  train steps    the trainer's step (`bench.run_case`): squeezenet1_1 at 224 px, batch
                 256, and the small layout at 32 px, batch 1024, both bfloat16, in each
                 layer formulation (config.layers), with img/s, MFU against the bfloat16
                 peak, and compile times;
  trainings      the quick Fashion-MNIST run (experiments/fashion_mnist.py:quick: top-1,
                 wall time) and the quick Figure 3(a) sweep (wall time);
  input          whether input or host syncs cap the step: the real loop's img/s with
                 the batches put from a prefetching host thread vs gathered from the
                 split on the devices (config.data_on_device: the quick run's own
                 setting, and a few hundred steps of the other), beside the same
                 network's step alone (`bench.run_case`: no loop, a fixed batch).
--tiny swaps in tiny sizes, the synthetic `test` presets and fewer steps, so that
the test suite runs every part on CPU. A part that fails is recorded with its error
and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402

from squeezejax import bench, configs, files, parallel, sweep, timing, train  # noqa: E402
from squeezejax.errors import UserError  # noqa: E402

EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'experiments')
FASHION_MNIST = os.path.join(EXPERIMENTS, 'fashion_mnist.py')
FIG3A = os.path.join(EXPERIMENTS, 'fig3a_squeeze_ratio.py')
# The quick Fashion-MNIST network, for the step-alone figure beside the loop's.
QUICK_SPEC_FLAGS = {'base_e': '64', 'incr_e': '64', 'dropout_rate': '0.0',
                    'init': 'torchvision', 'conv10_relu': 'False', 'in_channels': '1',
                    'num_classes': '10'}


@dataclasses.dataclass(frozen=True)
class Sizes:
  peak: int  # matmul size per device
  cases: tuple[tuple[str, int, int], ...]  # (preset, px, batch)
  case_spec_flags: dict[str, str]
  windows: int
  steps: int
  preset: str  # of fashion_mnist.py and fig3a_squeeze_ratio.py
  input_steps: int
  input_px: int
  input_spec_flags: dict[str, str]
  num_devices: int = 0  # 0 = every device
  cache_dir: str | None = ''  # the sweep's: '' = its own, None = the process's


FULL = Sizes(8192, (('squeezenet1_1', 224, 256), ('squeezenet_small', 32, 1024)), {}, 5, 10,
             'quick', 400, 28, QUICK_SPEC_FLAGS)
# On one CPU device, so that the suite's compilation cache and 2 cores keep it short.
TINY = Sizes(256, (('squeezenet_small', 16, 16),), {'base_e': '16', 'incr_e': '16'}, 2, 1,
             'test', 8, 16, {'base_e': '16', 'incr_e': '16', 'num_classes': '10'},
             num_devices=1, cache_dir=None)


def run_part(name: str, report: dict[str, Any], fn: Callable[[], Any]) -> None:
  print(f'[check] {name}', flush=True)
  start = time.perf_counter()
  try:
    report[name] = fn()
  except Exception as e:  # pylint: disable=broad-except  # recorded; the other parts run
    traceback.print_exc()
    report[name] = {'error': f'{type(e).__name__}: {e}'.splitlines()[0]}
  report['part_s'][name] = time.perf_counter() - start


def peaks(mesh, sizes: Sizes) -> dict[str, float]:
  return {dtype: timing.matmul_peak_gflops(mesh, sizes.peak, dtype=dtype)
          for dtype in ('bfloat16', 'float32')}


def train_steps(mesh, sizes: Sizes, peak: dict[str, float], formulations: list[str]):
  rows = []
  for model, px, batch in sizes.cases:
    for formulation in formulations:
      case, = bench.parse_cases(model, px, batch, dict(sizes.case_spec_flags))
      case.config.layers = formulation
      result, = bench.run_case(case, dtype='bfloat16', compare='none', mesh=mesh,
                               peak_gflops=peak['bfloat16'], windows=sizes.windows,
                               steps=sizes.steps, say=print)
      rows.append({**{k: v for k, v in result.items() if k != 'spec'},
                   'layers': formulation})
  return rows


def training(config_arg: str, workdir: str, sizes: Sizes, **overrides) -> dict[str, Any]:
  if sizes.num_devices:
    overrides['num_devices'] = sizes.num_devices
  config = configs.load(config_arg, overrides)
  result = train.train_and_evaluate(config, workdir)
  keep = ('steps', 'top1', 'top5', 'final_train_loss', 'train_img_s', 'wall_s')
  return {'config': config_arg, 'dataset': config.dataset,
          'data_on_device': config.data_on_device,
          'data_on_device_resolved': result.get('data_on_device', False),
          **{k: result[k] for k in keep if k in result}}


def input_cap(mesh, sizes: Sizes, workdir: str, quick: dict[str, Any]) -> dict[str, Any]:
  """The quick run's img/s (its data_on_device resolved) beside a run with the other
  setting, and beside the same network's step alone."""
  steps = sizes.input_steps
  config = configs.load(f'{FASHION_MNIST}:{sizes.preset}')
  resident = quick['data_on_device_resolved']
  other = training(f'{FASHION_MNIST}:{sizes.preset}', os.path.join(workdir, 'input'),
                   sizes, data_on_device='off' if resident else 'on', total_steps=steps,
                   log_every=max(1, steps // 4), eval_every=0, checkpoint_every=steps)
  host, device = (quick, other) if not resident else (other, quick)
  case, = bench.parse_cases('squeezenet_small', sizes.input_px, config.batch_size,
                            dict(sizes.input_spec_flags))
  step_alone, = bench.run_case(case, dtype=config.dtype, compare='none', mesh=mesh,
                               peak_gflops=float('nan'), windows=sizes.windows,
                               steps=sizes.steps, say=print)
  host_img_s, device_img_s = host['train_img_s'], device['train_img_s']
  alone = step_alone['squeezejax_img_s']
  return {'host_prefetched_img_s': host_img_s, 'device_resident_img_s': device_img_s,
          'step_alone_img_s': alone, 'device_over_host': device_img_s / host_img_s,
          'loop_over_step_alone': device_img_s / alone,
          'input_caps_the_step': device_img_s / host_img_s > 1.1,
          'host_syncs_cap_the_step': device_img_s / alone < 0.8,
          'steps': {'host_prefetched': host['steps'], 'device_resident': device['steps']}}


def markdown(report: dict[str, Any]) -> str:
  env = report['environment']
  lines = [f'# Accelerator check: {env["device_count"]} x {env["device_kind"]} '
           f'({env["backend"]}), JAX {env["jax"]}' + (' (--tiny)' if report['tiny'] else ''), '']
  p = report.get('peaks', {})
  if 'error' in p or not p:
    lines += [f'Matmul peaks: {p.get("error", "not run")}', '']
  else:
    lines += [f'Matmul peaks: bfloat16 {p["bfloat16"]:,.0f} GFLOP/s, float32 '
              f'{p["float32"]:,.0f} GFLOP/s', '']
  steps = report.get('train_steps')
  lines += ['| model | px | batch | dtype | layers | train img/s | eval img/s | MFU (bf16 peak) '
            '| compile train s | compile eval s |', '|---|--:|--:|---|---|--:|--:|--:|--:|--:|']
  if isinstance(steps, list):
    for r in steps:
      lines.append(f'| {r["model"]} | {r["image_size"]} | {r["batch_size"]} | {r["dtype"]} | '
                   f'{r["layers"]} | {r["squeezejax_img_s"]:,.1f} | {r["eval_img_s"]:,.1f} | '
                   f'{100 * r["mfu"]:.1f}% | {r["compile_train_s"]:.1f} | '
                   f'{r["compile_eval_s"]:.1f} |')
  else:
    lines.append(f'| {(steps or {}).get("error", "not run")} |||||||||')
  lines += ['', '| run | dataset | data on device | steps | top-1 | train img/s | wall s |',
            '|---|---|---|--:|--:|--:|--:|']
  for name in ('fashion_mnist_quick', 'fig3a_quick_sweep'):
    r = report.get(name) or {}
    if 'error' in r:
      lines.append(f'| {name} | {r["error"]} ||||||')
    elif name == 'fig3a_quick_sweep':
      lines.append(f'| {name} ({r.get("points", 0)} points) | {r.get("dataset", "")} | '
                   f'{r.get("data_on_device", "")} | | | | {r.get("wall_s", 0):.1f} |')
    else:
      lines.append(f'| {name} | {r.get("dataset", "")} | {r.get("data_on_device", "")} | '
                   f'{r.get("steps", "")} | {r.get("top1", 0):.4f} | '
                   f'{r.get("train_img_s") or 0:,.0f} | {r.get("wall_s", 0):.1f} |')
  i = report.get('input') or {}
  lines.append('')
  if 'error' in i or not i:
    lines.append(f'Input: {i.get("error", "not run")}')
  else:
    lines += [f'Input (the real loop, {i["steps"]["host_prefetched"]} / '
            f'{i["steps"]["device_resident"]} steps): host-prefetched '
              f'{i["host_prefetched_img_s"]:,.0f} img/s, device-resident '
              f'{i["device_resident_img_s"]:,.0f} img/s, the same step alone '
              f'{i["step_alone_img_s"]:,.0f} img/s. Input caps the step: '
              f'{"yes" if i["input_caps_the_step"] else "no"} (device/host '
              f'{i["device_over_host"]:.2f}); host syncs or dispatch cap it: '
              f'{"yes" if i["host_syncs_cap_the_step"] else "no"} (loop/step alone '
              f'{i["loop_over_step_alone"]:.2f}).']
  lines += ['', 'Seconds per part: ' + ', '.join(f'{k} {v:.0f}'
                                                 for k, v in report['part_s'].items())]
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='directory for check.json and check.md')
  parser.add_argument('--tiny', action='store_true', help='tiny sizes (CPU, the tests)')
  parser.add_argument('--layers', default='textbook,cpu',
                      help='layer formulations to time side by side (config.layers)')
  parser.add_argument('--skip', default='', help='comma-separated parts to leave out')
  args = parser.parse_args(argv)
  parallel.configure_host()  # as the CLI does, before JAX starts
  formulations = args.layers.split(',')
  for f in formulations:
    if f not in configs.LAYERS:
      raise UserError(f'--layers={args.layers!r}: {f!r} is not one of {", ".join(configs.LAYERS)}')
  out = files.check_output_dir(args.out, '--out')
  os.makedirs(out, exist_ok=True)
  sizes = TINY if args.tiny else FULL
  mesh = parallel.make_mesh(sizes.num_devices)
  report: dict[str, Any] = {
      'tiny': args.tiny, 'part_s': {},
      'environment': {'backend': jax.default_backend(), 'jax': jax.__version__,
                      'device_kind': jax.devices()[0].device_kind,
                      'device_count': jax.device_count()}}
  skip = set(filter(None, args.skip.split(',')))
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as work:
    parts = {
        'peaks': lambda: peaks(mesh, sizes),
        'train_steps': lambda: train_steps(mesh, sizes, report['peaks'], formulations),
        'fashion_mnist_quick': lambda: training(f'{FASHION_MNIST}:{sizes.preset}',
                                                os.path.join(work, 'fmnist'), sizes),
        'input': lambda: input_cap(mesh, sizes, work, report['fashion_mnist_quick']),
        'fig3a_quick_sweep': lambda: fig3a(sizes, os.path.join(work, 'fig3a')),
    }
    for name, fn in parts.items():
      if name not in skip:
        run_part(name, report, fn)
  report['total_s'] = time.perf_counter() - start
  files.write_json(os.path.join(out, 'check.json'), report)
  files.write_atomic(os.path.join(out, 'check.md'), markdown(report))
  print(markdown(report))
  print(f'wrote {out}/check.json and check.md in {report["total_s"]:.0f} s')
  failed = [k for k, v in report.items() if isinstance(v, dict) and 'error' in v]
  return 1 if failed else 0


def fig3a(sizes: Sizes, workdir: str) -> dict[str, Any]:
  start = time.perf_counter()
  overrides = {'num_devices': sizes.num_devices} if sizes.num_devices else {}
  records = sweep.run_sweep(f'{FIG3A}:{sizes.preset}', workdir, overrides=overrides,
                            cache_dir=sizes.cache_dir, log=print)
  failed = [r['name'] for r in records if r['status'] != 'ok']
  if failed:
    raise RuntimeError(f'sweep points failed: {", ".join(failed)}')
  return {'config': f'{FIG3A}:{sizes.preset}', 'points': len(records),
          'dataset': records[0]['dataset'] if records else None,
          'data_on_device': configs.load(f'{FIG3A}:{sizes.preset}').data_on_device,
          'top1': [r['top1'] for r in records], 'wall_s': time.perf_counter() - start}


if __name__ == '__main__':
  try:
    sys.exit(main(sys.argv[1:]))
  except UserError as e:
    print(f'accelerator_check: {e}', file=sys.stderr)
    sys.exit(2)
