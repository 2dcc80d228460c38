r"""Design-space sweeps: expand a grid, run each point in its own workdir, collect.

  squeezejax sweep --config=experiments/fig3a_squeeze_ratio.py:quick --workdir=runs/fig3a \
      [--seeds=3] [--executor=local|processes|submitit] [--parallel=2] [--config.X=...]

A sweep is the experiment file's `get_config(arg)` plus `get_sweep(arg)`, a list
of override dicts with dotted keys (one per point). Each point x seed gets a run
directory under `--workdir`, named from its overrides (`squeeze_ratio=0.25,seed=0`),
and one JSON line in `WORKDIR/results.jsonl` when it finishes or fails.

Set up, launch, collect, analyse (pycls): the results file is the only state.
  * A rerun skips points that have a line, appends the line of a point whose
    `result.json` exists (the sweep was killed after the run finished), and
    resumes the others (the trainer resumes from its checkpoints). Killed at any
    moment and rerun, a sweep ends with each point exactly once in results.jsonl.
  * A failing point (an invalid design point, a crash) is recorded with
    `status: "failed"` and its one-line error; the sweep goes on. `--retry_failed`
    runs the failed points again.
  * Only process 0 writes (multi-host sweeps run the same command on every host
    with `--config.coordinator_address/num_processes/process_id`).

Executors: `local` (sequential, in this process), `processes` (`--parallel`
subprocesses `python -m squeezejax train`, each given its own GPUs, or its own
CPU cores), `submitit` (SLURM; `--cluster=local` runs submitit's LocalExecutor).
All of them share one persistent XLA compilation cache (`WORKDIR/xla_cache`), so
points with the same shapes (seeds) compile once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import sys
import time
import traceback
from typing import Any, Callable

from squeezejax import configs
from squeezejax import flags
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

RESULTS = 'results.jsonl'
SWEEP_INFO = 'sweep.json'
RESULT_JSON = 'result.json'  # written atomically by the trainer when a run is done
# The metaparameters every results line carries (pycls: analyse by them).
METAPARAMETERS = ('layout', 'base_e', 'incr_e', 'pct_3x3', 'freq', 'squeeze_ratio',
                  'bypass', 'num_classes')
METRICS = ('params', 'size_mib', 'macs', 'steps', 'final_train_loss', 'top1', 'top5',
           'train_img_s', 'wall_s')
EXECUTORS = ('local', 'processes', 'submitit')
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SweepError(UserError):
  pass


class SweepPreempted(Exception):
  """SIGTERM: the sweep stops, the running point keeps its checkpoint; rerun to resume."""


@contextlib.contextmanager
def _stop_on_sigterm():
  """SIGTERM raises SweepPreempted in the driver (the trainer installs its own handler)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  def handler(signum, frame):
    raise SweepPreempted('SIGTERM')
  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _is_preemption(error: BaseException) -> bool:
  # train.Preempted, without importing the trainer (and JAX) into every driver.
  return isinstance(error, SweepPreempted) or type(error).__name__ == 'Preempted'


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep: a grid point with its seed."""
  name: str  # also the run directory's name under the sweep workdir
  overrides: dict[str, Any]  # dotted config keys, including 'seed'


# -- grid ---------------------------------------------------------------------


def load_grid(config_arg: str) -> list[dict[str, Any]]:
  """The experiment file's `get_sweep(arg)`: a list of override dicts."""
  path, _, arg = config_arg.partition(':')
  module = configs.load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'--config={config_arg!r} defines no get_sweep(arg); a sweep needs '
                     'one (a list of override dicts)')
  try:
    grid = module.get_sweep(arg) if arg else module.get_sweep()
  except (KeyError, ValueError) as e:
    if isinstance(e, UserError):
      raise
    raise SweepError(f'--config={config_arg!r}: {e}') from None
  if not grid or not all(isinstance(p, dict) for p in grid):
    raise SweepError(f'--config={config_arg!r}: get_sweep must return a non-empty list of '
                     'dicts')
  return [dict(p) for p in grid]


def expand(grid: list[dict[str, Any]], seeds: int = 1, base_seed: int = 0) -> list[Point]:
  """Grid x seeds -> points with deterministic, unique names (grid order, then seed)."""
  if seeds < 1:
    raise SweepError(f'--seeds={seeds}: expected an integer >= 1')
  points, seen = [], set()
  for overrides in grid:
    for k in range(seeds):
      point = {**overrides, 'seed': overrides.get('seed', base_seed) + k}
      name = run_name(point)
      if name in seen:
        raise SweepError(f'the sweep lists the point {name!r} twice')
      seen.add(name)
      points.append(Point(name, point))
  return points


def run_name(overrides: dict[str, Any]) -> str:
  """`squeeze_ratio=0.25,seed=0`: readable, deterministic, safe as a directory name."""
  leaves = [key.rsplit('.', 1)[-1] for key in overrides]
  parts = []
  for key, leaf in zip(overrides, leaves):
    if key == 'seed':
      continue
    label = leaf if leaves.count(leaf) == 1 else key  # full key only when ambiguous
    parts.append(f'{label}={_format_value(overrides[key])}')
  parts.append(f'seed={overrides.get("seed", 0)}')
  name = re.sub(r'[^A-Za-z0-9._=,+-]', '_', ','.join(parts))
  if len(name) > 120:  # file systems limit names to 255 bytes; keep it readable
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    name = f'{name[:100]}-{digest}'
  return name


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  return str(value)


def check_points(config_arg: str, cli_overrides: dict[str, Any], points: list[Point]):
  """Loads every point's config so unknown keys fail before anything runs.

  Values the design space rejects (squeeze_ratio=0) load fine and fail in their
  own run, where they are recorded; a misspelt key is a mistake in the sweep.
  """
  base = configs.load(config_arg, cli_overrides)
  for point in points:
    configs.apply_overrides(base.copy_and_resolve_references(), point.overrides)
  return base


# -- results file --------------------------------------------------------------


def read_results(path: str) -> list[dict[str, Any]]:
  """Records by point name, the last line winning; torn (unparsable) lines are skipped."""
  if not os.path.exists(path):
    return []
  by_name: dict[str, dict] = {}
  with open(path, 'rb') as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut by a kill or power loss
      if isinstance(record, dict) and 'name' in record:
        by_name.pop(record['name'], None)  # keep file order of the winning line
        by_name[record['name']] = record
  return list(by_name.values())


def append_result(path: str, record: dict[str, Any]) -> None:
  """One line, one write, then fsync: a kill leaves the line whole or absent."""
  data = (json.dumps(record, sort_keys=True) + '\n').encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    written = os.write(fd, data)
    if written != len(data):
      raise OSError(f'short write to {path}: {written} of {len(data)} bytes')
    os.fsync(fd)
  finally:
    os.close(fd)


def rewrite_results(path: str, records: list[dict[str, Any]]) -> None:
  """Atomically replaces the file (temporary file, fsync, rename)."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(b''.join((json.dumps(r, sort_keys=True) + '\n').encode() for r in records))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def repair_results(path: str) -> list[dict[str, Any]]:
  """Drops torn and duplicate lines (rewriting the file only if it has any)."""
  records = read_results(path)
  if os.path.exists(path):
    with open(path, 'rb') as f:
      lines = f.read().splitlines(keepends=True)
    clean = len(lines) == len(records) and all(line.endswith(b'\n') for line in lines)
    if not clean:
      rewrite_results(path, records)
  return records


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'.strip()


def ok_record(point: Point, result: dict[str, Any]) -> dict[str, Any]:
  """A results line from the trainer's result.json."""
  spec = result.get('spec', {})
  config = result.get('config', {})
  record = {'name': point.name, 'status': 'ok', 'run_dir': point.name,
            'seed': point.overrides['seed'], 'overrides': point.overrides,
            'dataset': config.get('dataset'), 'image_size': result.get('image_size')}
  record.update({k: spec.get(k) for k in METAPARAMETERS})
  record.update({k: result.get(k) for k in METRICS})
  return record


def failed_record(point: Point, config, error: str) -> dict[str, Any]:
  """A results line for a point that failed; metaparameters from its config."""
  record = {'name': point.name, 'status': 'failed', 'run_dir': point.name,
            'seed': point.overrides['seed'], 'overrides': point.overrides, 'error': error}
  if config is not None:
    meta = {**spec_lib.PRESETS.get(config.model, {}), **config.spec.to_dict()}
    record.update({k: meta.get(k) for k in METAPARAMETERS})
    record['dataset'] = config.dataset
  return record


# -- compilation cache ----------------------------------------------------------


def cache_env(cache_dir: str) -> dict[str, str]:
  """The persistent-compilation-cache settings as environment (for subprocesses)."""
  return {'JAX_COMPILATION_CACHE_DIR': cache_dir,
          # Small runs compile in seconds; cache every executable, not only slow ones.
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


def setup_compilation_cache(cache_dir: str | None) -> None:
  """Points this process's JAX at a persistent compilation cache."""
  if not cache_dir:
    return
  import jax  # late: `processes` and `submitit` sweeps never start JAX in the driver
  from jax.experimental.compilation_cache import compilation_cache
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  if jax.config.jax_compilation_cache_dir != cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    # JAX decides once per process whether to use the cache (at the first compile);
    # make it look again now that there is a directory.
    compilation_cache.reset_cache()


# -- running one point -----------------------------------------------------------


def run_point(config_arg: str, overrides: dict[str, Any], run_dir: str,
              cache_dir: str | None = None) -> dict[str, Any]:
  """Trains one point in this process (the local executor and submitit jobs)."""
  from squeezejax import parallel as parallel_lib
  parallel_lib.configure_host()  # a submitit job is a fresh process; a no-op after the CLI's
  setup_compilation_cache(cache_dir)
  overrides = {**overrides, **_submitit_distributed_overrides()}
  config = configs.load(config_arg, overrides)
  from squeezejax import train  # late: importing the trainer starts JAX
  return train.train_and_evaluate(config, run_dir)


class RequeueablePoint:
  """A submitit job function that SLURM can requeue on preemption or timeout.

  submitit calls `checkpoint` when the job is about to be stopped and resubmits
  what it returns: the same point, which the trainer resumes from its checkpoints.
  """

  def __call__(self, config_arg: str, overrides: dict[str, Any], run_dir: str,
               cache_dir: str | None = None) -> dict[str, Any]:
    return run_point(config_arg, overrides, run_dir, cache_dir)

  def checkpoint(self, *args, **kwargs):
    import submitit
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _submitit_distributed_overrides(port: int = 12355) -> dict[str, Any]:
  """In a multi-task submitit job: jax.distributed settings from the job environment."""
  try:
    import submitit
    env = submitit.JobEnvironment()
  except (ImportError, RuntimeError):
    return {}
  if env.num_tasks <= 1:
    return {}
  return {'coordinator_address': f'{env.hostnames[0]}:{port}',
          'num_processes': env.num_tasks, 'process_id': env.global_rank}


def _load_result(run_dir: str) -> dict[str, Any] | None:
  path = os.path.join(run_dir, RESULT_JSON)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError:
    return None  # not the trainer's atomic write; treat the run as unfinished


def _write_error(run_dir: str, text: str) -> None:
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, 'error.txt'), 'w') as f:
    f.write(text)


# -- executors -------------------------------------------------------------------
# Each executor runs the pending points and calls `done(point, result, error)`
# once per point as it finishes: result is the trainer's dict, or None with a
# one-line error.

Done = Callable[[Point, dict | None, str | None], None]


@dataclasses.dataclass
class Launch:
  config_arg: str  # absolute path to the experiment file, with its preset
  cli_overrides: dict[str, Any]
  workdir: str
  cache_dir: str | None
  parallel: int = 1
  devices_per_run: int = 0  # 0 = all visible devices / parallel
  cluster: str | None = None  # submitit: None = auto (SLURM if present), 'local', 'debug'
  timeout_min: int = 60 * 24
  slurm_partition: str = ''
  gpus_per_node: int = 0
  nodes: int = 1
  tasks_per_node: int = 1

  def run_dir(self, point: Point) -> str:
    return os.path.join(self.workdir, point.name)

  def overrides(self, point: Point) -> dict[str, Any]:
    return {**self.cli_overrides, **point.overrides}  # the grid wins over the CLI


def run_local(launch: Launch, points: list[Point], done: Done) -> None:
  """Sequential, in this process; compiled shapes are reused through the cache."""
  main_thread = threading.current_thread() is threading.main_thread()
  for point in points:
    handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
      result = run_point(launch.config_arg, launch.overrides(point), launch.run_dir(point),
                         launch.cache_dir)
    except Exception as e:  # a failing point must not stop the sweep; a preemption must
      if _is_preemption(e):
        raise SweepPreempted(f'{point.name}: {e}') from e
      _write_error(launch.run_dir(point), traceback.format_exc())
      done(point, None, _one_line(e))
    else:
      done(point, result, None)
    finally:
      if main_thread:  # the trainer replaced the driver's SIGTERM handler
        signal.signal(signal.SIGTERM, handler)


def device_groups(parallel: int, devices_per_run: int = 0) -> list[dict[str, Any]]:
  """Disjoint devices for `parallel` concurrent runs: GPUs if visible, else CPU cores."""
  gpus = _visible_gpus()
  if gpus:
    per_run = devices_per_run or max(1, len(gpus) // parallel)
    if per_run * parallel > len(gpus):
      raise SweepError(f'--parallel={parallel} x --devices_per_run={per_run} needs '
                       f'{per_run * parallel} GPUs; {len(gpus)} are visible')
    return [{'env': {'CUDA_VISIBLE_DEVICES': ','.join(gpus[i * per_run:(i + 1) * per_run])}}
            for i in range(parallel)]
  cores = sorted(os.sched_getaffinity(0))
  per_run = max(1, len(cores) // parallel)
  groups = []
  for i in range(parallel):
    own = cores[(i * per_run) % len(cores):][:per_run] or cores
    groups.append({'env': {'JAX_PLATFORMS': 'cpu',
                           'JAX_NUM_CPU_DEVICES': str(devices_per_run or 1)},
                   'cores': own})
  return groups


def _visible_gpus() -> list[str]:
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [g for g in visible.split(',') if g.strip() not in ('', '-1')]
  if shutil.which('nvidia-smi') is None:
    return []
  try:
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith('GPU')]


def _child_env(extra: dict[str, str], cache_dir: str | None) -> dict[str, str]:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (_PACKAGE_ROOT, env.get('PYTHONPATH', '')) if p)
  if 'JAX_NUM_CPU_DEVICES' in extra:  # the XLA flag would override the split
    env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                              env.get('XLA_FLAGS', '')).strip()
  if cache_dir:
    env.update(cache_env(cache_dir))
  env.update(extra)
  return env


def train_command(launch: Launch, point: Point) -> list[str]:
  """`python -m squeezejax train ...` for one point (values as Python literals)."""
  flags_ = {k: _flag_value(v) for k, v in launch.cli_overrides.items()}  # as typed
  flags_.update({k: repr(v) for k, v in point.overrides.items()})
  return [sys.executable, '-m', 'squeezejax', 'train', f'--config={launch.config_arg}',
          f'--workdir={launch.run_dir(point)}',
          *[f'--config.{k}={v}' for k, v in flags_.items()]]


def _flag_value(value: Any) -> str:
  # Command-line overrides arrive as the strings the user typed; pass them on.
  return value if isinstance(value, str) else repr(value)


def run_processes(launch: Launch, points: list[Point], done: Done) -> None:
  """Up to `parallel` concurrent `squeezejax train` subprocesses, each on its own devices."""
  groups = device_groups(launch.parallel, launch.devices_per_run)
  free = list(range(len(groups)))
  queue = list(points)
  running: dict[int, tuple[Point, subprocess.Popen, Any]] = {}
  try:
    while queue or running:
      while queue and free:
        point, slot = queue.pop(0), free.pop(0)
        run_dir = launch.run_dir(point)
        os.makedirs(run_dir, exist_ok=True)
        log = open(os.path.join(run_dir, 'log.txt'), 'ab')
        cores = groups[slot].get('cores')
        process = subprocess.Popen(
            train_command(launch, point), stdout=log, stderr=subprocess.STDOUT,
            env=_child_env(groups[slot]['env'], launch.cache_dir),
            preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c)) if cores else None)
        running[slot] = (point, process, log)
      time.sleep(0.2)
      for slot, (point, process, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[slot]
        free.append(slot)
        if process.returncode in (143, -signal.SIGTERM):  # the child was preempted
          raise SweepPreempted(f'{point.name}: its run was preempted (exit {process.returncode})')
        result = _load_result(launch.run_dir(point)) if process.returncode == 0 else None
        if result is not None:
          done(point, result, None)
        else:
          done(point, None, _error_from_log(launch.run_dir(point), process.returncode))
  finally:  # the driver was interrupted: stop the children; a rerun resumes them
    for _, process, log in running.values():
      process.terminate()
      process.wait()
      log.close()


def _error_from_log(run_dir: str, returncode: int) -> str:
  """The child's one-line error (the CLI prints `squeezejax train: error: ...`)."""
  try:
    with open(os.path.join(run_dir, 'log.txt'), errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    lines = []
  for line in reversed(lines):
    if 'error:' in line.lower() or line.split(':', 1)[0].endswith(('Error', 'Exception')):
      return line
  return f'exit status {returncode}' + (f': {lines[-1]}' if lines else '')


def run_submitit(launch: Launch, points: list[Point], done: Done) -> None:
  """One submitit job per point (a SLURM array; submitit's LocalExecutor with cluster=local)."""
  try:
    import submitit
  except ImportError:
    raise SweepError('--executor=submitit needs the submitit package: pip install '
                     'squeezejax[cluster]') from None
  executor = submitit.AutoExecutor(folder=os.path.join(launch.workdir, 'submitit'),
                                   cluster=launch.cluster)
  parameters = dict(timeout_min=launch.timeout_min, nodes=launch.nodes,
                    tasks_per_node=launch.tasks_per_node)
  if launch.gpus_per_node:
    parameters['gpus_per_node'] = launch.gpus_per_node
  if executor.cluster == 'slurm':
    parameters['slurm_array_parallelism'] = launch.parallel
    if launch.slurm_partition:
      parameters['slurm_partition'] = launch.slurm_partition
  executor.update_parameters(**parameters)
  # Jobs inherit this environment: the package path and the shared compile cache.
  os.environ.update({k: v for k, v in _child_env({}, launch.cache_dir).items()
                     if k == 'PYTHONPATH' or k.startswith('JAX_')})
  # The local executor starts every job at once; submit in waves of `parallel`.
  wave = len(points) if executor.cluster == 'slurm' else max(1, launch.parallel)
  for start in range(0, len(points), wave):
    batch = points[start:start + wave]
    with executor.batch():
      jobs = [executor.submit(RequeueablePoint(), launch.config_arg, launch.overrides(p),
                              launch.run_dir(p), launch.cache_dir) for p in batch]
    for point, job in zip(batch, jobs):
      try:
        result = job.result()
      except Exception as e:  # submitit wraps the job's exception with its traceback
        _write_error(launch.run_dir(point), str(e))
        done(point, None, _submitit_error(e))
      else:
        done(point, result, None)


def _submitit_error(error: Exception) -> str:
  """The last line of the job's traceback (`SpecError: squeeze_ratio=0 ...`)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  for line in reversed(lines):
    if re.match(r'^[\w.]+(Error|Exception)\b', line):
      return line
  return _one_line(error)


EXECUTOR_FUNCTIONS = {'local': run_local, 'processes': run_processes,
                      'submitit': run_submitit}


# -- the sweep ---------------------------------------------------------------------


def run_sweep(config_arg: str, workdir: str, *, seeds: int = 1, vmap_seeds: bool = False,
              overrides: dict[str, Any] | None = None, executor: str = 'local',
              retry_failed: bool = False, report: bool = True,
              cache_dir: str | None = '', log: Callable[[str], None] = print,
              **launch_options) -> list[dict[str, Any]]:
  """Runs every point not yet in results.jsonl; returns the sweep's records.

  cache_dir: '' = WORKDIR/xla_cache, None = no persistent compilation cache.
  launch_options: fields of `Launch` (parallel, cluster, timeout_min, ...).
  """
  if executor not in EXECUTORS:
    raise SweepError(f'--executor={executor!r}: expected one of {", ".join(EXECUTORS)}')
  overrides = dict(overrides or {})
  path, _, arg = config_arg.partition(':')
  config_arg = os.path.abspath(path) + (f':{arg}' if arg else '')  # jobs run elsewhere
  workdir = os.path.abspath(workdir)
  base = configs.load(config_arg, overrides)
  if vmap_seeds and seeds > 1:  # one run per grid point trains all its seeds at once
    points = [Point(f'{p.name}-{p.overrides["seed"] + seeds - 1}',  # `...,seed=0-2`
                    {**p.overrides, 'num_seeds': seeds})
              for p in expand(load_grid(config_arg), 1, base.seed)]
  else:
    points = expand(load_grid(config_arg), seeds, base.seed)
  check_points(config_arg, overrides, points)
  writer = base.process_id == 0
  results_path = os.path.join(workdir, RESULTS)
  if writer:
    os.makedirs(workdir, exist_ok=True)
    _check_sweep_info(workdir, config_arg, overrides)
  if cache_dir == '':
    cache_dir = os.path.join(workdir, 'xla_cache')

  records = {r['name']: r for r in (repair_results(results_path) if writer
                                    else read_results(results_path))}
  if retry_failed and writer and any(r['status'] == 'failed' for r in records.values()):
    records = {n: r for n, r in records.items() if r['status'] != 'failed'}
    rewrite_results(results_path, list(records.values()))

  def done(point: Point, result: dict | None, error: str | None) -> None:
    if result is not None and 'per_seed' in result:  # vmapped seeds: a line per seed
      for entry, name in zip(result['per_seed'], record_names(point)):
        record = {**ok_record(point, {**result, **entry}), 'name': name, 'seed': entry['seed']}
        log(f'[sweep] {name}: top1 {record["top1"]:.4f} top5 {record["top5"]:.4f}')
        records[name] = record
        if writer:
          append_result(results_path, record)
      return
    if result is not None:
      record = ok_record(point, result)
      log(f'[sweep] {point.name}: top1 {record["top1"]:.4f} top5 {record["top5"]:.4f} '
          f'{record["size_mib"]:.3f} MiB {record["wall_s"]:.0f} s')
    else:
      config = _config_or_none(config_arg, {**overrides, **point.overrides})
      record = failed_record(point, config, error)
      log(f'[sweep] {point.name}: FAILED: {error}')
    records[point.name] = record
    if writer:
      append_result(results_path, record)

  launch = Launch(config_arg, overrides, workdir, cache_dir, **launch_options)
  pending = []
  for point in points:
    if point.name in records or all(name in records for name in record_names(point)):
      continue  # done (or failed: --retry_failed reruns those)
    result = _load_result(launch.run_dir(point))
    if result is not None:  # finished, but killed before its line was written
      done(point, result, None)
    else:
      pending.append(point)
  log(f'[sweep] {len(points)} points, {len(points) - len(pending)} already done, '
      f'{len(pending)} to run with executor={executor}')
  start = time.time()
  if pending:
    with _stop_on_sigterm():
      EXECUTOR_FUNCTIONS[executor](launch, pending, done)
  log(f'[sweep] finished in {time.time() - start:.0f} s; results in {results_path}')
  ordered = [records[n] for p in points for n in record_names(p) if n in records]
  if report and writer:
    from squeezejax import report as report_lib  # report imports this module
    for path in report_lib.make_report(workdir):
      log(f'[sweep] wrote {path}')
  return ordered


def record_names(point: Point) -> list[str]:
  """The results.jsonl names a point produces: its own, or one per vmapped seed."""
  n = point.overrides.get('num_seeds', 1)
  if n == 1:
    return [point.name]
  return [f'{point.name}/{point.overrides["seed"] + k}' for k in range(n)]


def _config_or_none(config_arg: str, overrides: dict[str, Any]):
  try:
    return configs.load(config_arg, overrides)
  except Exception:  # the failure is being recorded already; its config is optional
    return None


def _check_sweep_info(workdir: str, config_arg: str, overrides: dict[str, Any]) -> None:
  """One workdir, one sweep: refuse to mix points of a different config into it."""
  info = {'config': config_arg, 'overrides': {k: repr(v) for k, v in overrides.items()}}
  path = os.path.join(workdir, SWEEP_INFO)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != info:
      raise SweepError(
          f'--workdir={workdir!r} holds a sweep of --config={old["config"]} with overrides '
          f'{old["overrides"]}; this is {config_arg} with {info["overrides"]}: use a new '
          '--workdir')
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, path)


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = flags.ArgumentParser(
      prog='squeezejax sweep',
      description='Run the sweep of an experiment file (get_sweep) and collect results.jsonl.')
  parser.add_argument('--config', required=True, help='experiments/FILE.py:PRESET')
  parser.add_argument('--workdir', required=True, help='sweep directory (one run dir per point)')
  parser.add_argument('--seeds', type=int, default=1, help='seeds per grid point')
  parser.add_argument('--vmap_seeds', action='store_true',
                      help='train the seeds of a point together in one vmapped step')
  parser.add_argument('--executor', choices=EXECUTORS, default='local')
  parser.add_argument('--parallel', type=int, default=1,
                      help='concurrent runs (processes, submitit)')
  parser.add_argument('--devices_per_run', type=int, default=0,
                      help='GPUs (or fake CPU devices) per run; 0 = visible / parallel')
  parser.add_argument('--retry_failed', action='store_true', help='rerun failed points')
  parser.add_argument('--no_report', action='store_true', help='skip figures and tables')
  parser.add_argument('--compilation_cache', default='',
                      help="persistent XLA cache dir ('' = WORKDIR/xla_cache, 'none' = off)")
  parser.add_argument('--cluster', default=None,
                      help='submitit cluster: slurm (default when present), local, debug')
  parser.add_argument('--timeout_min', type=int, default=60 * 24, help='submitit job limit')
  parser.add_argument('--slurm_partition', default='')
  parser.add_argument('--gpus_per_node', type=int, default=0)
  parser.add_argument('--nodes', type=int, default=1, help='hosts per run (jax.distributed)')
  parser.add_argument('--tasks_per_node', type=int, default=1)
  args = parser.parse_args(argv)
  if args.parallel < 1:
    raise SweepError(f'--parallel={args.parallel}: expected an integer >= 1')
  cache = None if args.compilation_cache == 'none' else args.compilation_cache
  try:
    _run_sweep_from_flags(args, overrides, cache)
  except SweepPreempted as e:
    print(f'squeezejax sweep: preempted ({e}); rerun the same command to resume',
          file=sys.stderr)
    return 143
  return 0


def _run_sweep_from_flags(args, overrides, cache) -> None:
  run_sweep(args.config, args.workdir, seeds=args.seeds, vmap_seeds=args.vmap_seeds,
            overrides=overrides,
            executor=args.executor, retry_failed=args.retry_failed,
            report=not args.no_report, cache_dir=cache, parallel=args.parallel,
            devices_per_run=args.devices_per_run, cluster=args.cluster,
            timeout_min=args.timeout_min, slurm_partition=args.slurm_partition,
            gpus_per_node=args.gpus_per_node, nodes=args.nodes,
            tasks_per_node=args.tasks_per_node)
