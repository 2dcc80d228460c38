r"""Design-space sweeps: expand a grid, run each point in its own workdir, collect.

  squeezejax sweep --config=experiments/fig3a_squeeze_ratio.py:quick --workdir=runs/fig3a \
      [--seeds=3 [--vmap_seeds]] [--executor=local|processes|slurm] [--parallel=2] \
      [--config.X=...]

A sweep is an experiment file's `get_config(arg)`, `get_sweep(arg)` (a list of
override dicts with dotted keys, one per point) and optionally `get_report(arg)`
(what its report draws: squeezejax.report), kept in WORKDIR/sweep.json. Each point
x seed runs in WORKDIR/<name> (`squeeze_ratio=0.25,seed=0`) and gets one line in
WORKDIR/results.jsonl (squeezejax.results), the sweep's only state (pycls): a rerun
skips points that have a line, appends the line of a point whose result.json exists
and resumes the others from their checkpoints, so a sweep killed at any moment and
rerun ends with each point once. A failed point is recorded and the sweep goes on
(`--retry_failed` runs it again); a preempted one stops the sweep, as SIGTERM to the
sweep does (exit 143; a rerun resumes). Only process 0 writes.

Executors: `local` (sequential, in this process), `processes` (submitit's
LocalExecutor: `--parallel` subprocess jobs, each on its own GPUs or CPU cores),
`slurm` (a submitit job array). All jobs share a persistent XLA compilation cache
(WORKDIR/xla_cache), so points with the same shapes (seeds) compile once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import time
import traceback
from typing import Any, Callable

from squeezejax import cli
from squeezejax import configs
from squeezejax import errors
from squeezejax import files
from squeezejax import results
from squeezejax.errors import UserError

RESULT_JSON = 'result.json'  # written atomically by the trainer when a run is done
STOP_GRACE_S = 60  # for stopped local jobs to save their checkpoints


class SweepPreempted(Exception):
  """SIGTERM reached the sweep or one of its runs: stop; a rerun resumes from checkpoints."""


def _preempt():
  raise SweepPreempted('SIGTERM')


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep: a grid point with its seed."""
  name: str  # also the run directory's name under the sweep workdir
  overrides: dict[str, Any]  # dotted config keys, including 'seed'


# -- grid ---------------------------------------------------------------------


def load_grid(config_arg: str) -> list[dict[str, Any]]:
  """The experiment file's `get_sweep(arg)`: a list of override dicts."""
  grid = _experiment(config_arg, 'get_sweep')
  if not grid or not all(isinstance(p, dict) for p in grid):
    raise UserError(f'--config={config_arg!r}: a sweep needs a get_sweep(arg) that returns a '
                    'non-empty list of override dicts')
  return [dict(p) for p in grid]


def load_report(config_arg: str) -> dict[str, Any] | None:
  """The experiment file's `get_report(arg)` (what its report draws), if it has one."""
  return _experiment(config_arg, 'get_report')


def _experiment(config_arg: str, function: str):
  module = configs.load_module(config_arg.partition(':')[0])
  return configs.call(module, function, config_arg) if hasattr(module, function) else None


def expand(grid: list[dict[str, Any]], seeds: int = 1, base_seed: int = 0,
           vmap: bool = False) -> list[Point]:
  """Grid x seeds -> points with deterministic, unique names (grid order, then seed).

  vmap: one point per grid point, training all its seeds at once (`...,seed=0-2`).
  """
  if seeds < 1:
    raise UserError(f'--seeds={seeds}: expected an integer >= 1')
  points, seen = [], set()
  for overrides in grid:
    for k in range(1 if vmap else seeds):
      point = {**overrides, 'seed': overrides.get('seed', base_seed) + k}
      name = run_name(point)
      if vmap and seeds > 1:
        name, point = f'{name}-{point["seed"] + seeds - 1}', {**point, 'num_seeds': seeds}
      if name in seen:
        raise UserError(f'the sweep lists the point {name!r} twice')
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
    value = overrides[key]
    parts.append(f'{label}={value:g}' if isinstance(value, float) else f'{label}={value}')
  parts.append(f'seed={overrides.get("seed", 0)}')
  name = re.sub(r'[^A-Za-z0-9._=,+-]', '_', ','.join(parts))
  if len(name) > 120:  # file systems limit names to 255 bytes; keep it readable
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    name = f'{name[:100]}-{digest}'
  return name


def record_names(point: Point) -> list[str]:
  """The results.jsonl names a point produces: its own, or one per vmapped seed."""
  n, seed = point.overrides.get('num_seeds', 1), point.overrides['seed']
  return [point.name] if n == 1 else [f'{point.name}/{seed + k}' for k in range(n)]


def point_config(base, point: Point):
  """The sweep's config with a point's overrides. Unvalidated: a misspelt key fails
  here, a value the design space rejects (squeeze_ratio=0) in the point's own run."""
  config = base.copy_and_resolve_references()
  configs.apply_overrides(config, point.overrides)
  return config


# -- one point ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a job returns instead of raising: the driver, whichever process the job ran
  in, tells a failure from a preemption by its status, not by parsing an error."""
  status: str  # 'ok' | 'failed' | 'preempted'
  result: dict[str, Any] | None = None  # the trainer's result.json dict, when ok
  error: str = ''  # one line, when failed (the traceback is in RUN_DIR/error.txt)


@dataclasses.dataclass
class Job:
  """One point's training, in the sweep's process or as a submitit job."""
  config_arg: str
  overrides: dict[str, Any]
  run_dir: str
  cache_dir: str | None = None
  cores: tuple[int, ...] = ()  # a CPU share of its own (the processes executor)

  def __call__(self) -> Outcome:
    # SIGTERM before or after the trainer's own handler (which saves a checkpoint
    # first) also ends the job as preempted: the point must not be recorded failed.
    with errors.on_sigterm(_preempt):
      try:
        if self.cores:  # before configure_host, which gives JAX a device per core
          os.sched_setaffinity(0, self.cores)
        from squeezejax import parallel  # late: importing it imports JAX
        parallel.configure_host()  # a fresh job process needs it; then a no-op
        setup_compilation_cache(self.cache_dir)
        config = configs.load(self.config_arg,
                              {**self.overrides, **_submitit_distributed_overrides()})
        from squeezejax import train
        return Outcome('ok', train.train_and_evaluate(config, self.run_dir))
      except (errors.Preempted, SweepPreempted):
        return Outcome('preempted')
      except Exception as e:  # a failing point must not stop the sweep
        _write_error(self.run_dir, traceback.format_exc())
        return Outcome('failed', error=_one_line(e))

  def checkpoint(self):
    """On SLURM preemption or timeout submitit requeues this: the same job, resuming."""
    import submitit
    return submitit.helpers.DelayedSubmission(self)


def _one_line(error: BaseException) -> str:
  return f'{type(error).__name__}: {(str(error).strip().splitlines() or [""])[0]}'.strip()


def _write_error(run_dir: str, text: str) -> None:
  os.makedirs(run_dir, exist_ok=True)
  files.write_atomic(os.path.join(run_dir, 'error.txt'), text)


def setup_compilation_cache(cache_dir: str | None) -> None:
  """Points this process's JAX at a persistent compilation cache."""
  if not cache_dir:
    return
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  os.makedirs(cache_dir, exist_ok=True)
  # Small runs compile in seconds; cache every executable, not only slow ones.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  if jax.config.jax_compilation_cache_dir != cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    # JAX decides once per process whether to use the cache (at the first compile);
    # make it look again now that there is a directory.
    compilation_cache.reset_cache()


def _submitit_distributed_overrides(port: int = 12355) -> dict[str, Any]:
  """In a multi-task submitit job: jax.distributed settings from the job environment."""
  if 'SUBMITIT_FOLDER' not in os.environ:  # not a submitit job: don't import it (its
    return {}                              # logging set-up closes other handlers)
  import submitit
  env = submitit.JobEnvironment()
  if env.num_tasks <= 1:
    return {}
  return {'coordinator_address': f'{env.hostnames[0]}:{port}',
          'num_processes': env.num_tasks, 'process_id': env.global_rank}


def _load_result(run_dir: str) -> dict[str, Any] | None:
  try:
    with open(os.path.join(run_dir, RESULT_JSON)) as f:
      return json.load(f)
  except (OSError, ValueError):  # none yet (the trainer writes it atomically at the end)
    return None


# -- executors -------------------------------------------------------------------
# Each runs its (point, job) pairs, calling `done(point, outcome)` as each finishes;
# `done` raises SweepPreempted for a preempted point, then the others are stopped.

Done = Callable[[Point, Outcome], None]


@dataclasses.dataclass
class Options:
  """How `processes` and `slurm` run jobs (the command-line flags of the same names)."""
  folder: str  # submitit's job files and logs
  parallel: int = 1
  gpus_per_node: int = 0  # GPUs per run
  timeout_min: int = 60 * 24
  slurm_partition: str = ''
  nodes: int = 1
  tasks_per_node: int = 1


def run_local(jobs: list[tuple[Point, Job]], done: Done, options: Options) -> None:
  """Sequential, in this process; compiled shapes are reused through the cache."""
  for point, job in jobs:
    done(point, job())


def device_slots(parallel: int, gpus_per_run: int = 0
                 ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
  """(GPUs, CPU cores) of each of `parallel` concurrent jobs, disjoint.

  GPUs: slot i gets i*G..(i+1)*G-1, counted in CUDA_VISIBLE_DEVICES where it is set.
  Without GPUs a slot gets a share of this process's cores, and no GPU.
  """
  if gpus_per_run:
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = ([int(g) for g in visible.split(',') if g.strip()] if visible is not None
           else list(range(parallel * gpus_per_run)))
    if len(ids) < parallel * gpus_per_run:
      raise UserError(f'--parallel={parallel} x --gpus_per_node={gpus_per_run} needs '
                      f'{parallel * gpus_per_run} GPUs; CUDA_VISIBLE_DEVICES has {len(ids)}')
    return [(tuple(ids[i * gpus_per_run:(i + 1) * gpus_per_run]), ())
            for i in range(parallel)]
  cores = sorted(os.sched_getaffinity(0))
  per = max(1, len(cores) // parallel)
  return [((), tuple(cores[(i * per) % len(cores):][:per])) for i in range(parallel)]


def _submitit():
  try:
    import submitit
    return submitit
  except ImportError:
    raise UserError('this executor needs submitit: pip install squeezejax[cluster]') from None


def run_processes(jobs: list[tuple[Point, Job]], done: Done, options: Options) -> None:
  """submitit's LocalExecutor: up to `parallel` subprocess jobs, each on its own devices."""
  executor = _submitit().LocalExecutor(folder=options.folder)
  slots = device_slots(options.parallel, options.gpus_per_node)
  queue, running = list(jobs), {}  # slot -> (point, job, submitit job)
  try:
    while queue or running:
      for slot, (gpus, cores) in enumerate(slots):
        if queue and slot not in running:
          executor.update_parameters(timeout_min=options.timeout_min,
                                     gpus_per_node=len(gpus), visible_gpus=gpus)
          point, job = queue.pop(0)
          job = dataclasses.replace(job, cores=cores)
          running[slot] = point, job, executor.submit(job)
      _collect(running, done, poll_s=0.5)
  finally:  # stopped: SIGTERM lets each trainer save a checkpoint, as a preemption does
    handles = [handle for *_, handle in running.values() if not handle.done()]
    for handle in handles:
      os.kill(int(handle.job_id), signal.SIGTERM)  # a local job's id is its controller's pid
    deadline = time.time() + STOP_GRACE_S
    while time.time() < deadline and not all(handle.done() for handle in handles):
      time.sleep(0.5)
    for handle in handles:
      handle.cancel(check=False)  # SIGINT, then SIGKILL, to whatever still runs


def run_slurm(jobs: list[tuple[Point, Job]], done: Done, options: Options) -> None:
  """One SLURM job array, `parallel` jobs at a time; jobs requeue on preemption."""
  try:
    executor = _submitit().AutoExecutor(folder=options.folder, cluster='slurm')
  except RuntimeError as e:
    raise UserError(f'--executor=slurm: {e}') from None
  executor.update_parameters(
      timeout_min=options.timeout_min, nodes=options.nodes,
      tasks_per_node=options.tasks_per_node, gpus_per_node=options.gpus_per_node,
      slurm_array_parallelism=options.parallel, slurm_partition=options.slurm_partition or None)
  with executor.batch():
    running = {i: (point, job, executor.submit(job)) for i, (point, job) in enumerate(jobs)}
  try:
    while running:
      _collect(running, done, poll_s=10)
  finally:  # scancel: SLURM sends SIGTERM, then kills
    for *_, handle in running.values():
      handle.cancel(check=False)


def _collect(running: dict[Any, tuple[Point, Job, Any]], done: Done, poll_s: float) -> None:
  """Waits `poll_s`, then passes each finished job's outcome to `done`."""
  time.sleep(poll_s)
  for key, (point, job, handle) in list(running.items()):
    if handle.done():
      del running[key]
      try:
        outcome = handle.result()
      except Exception as e:  # the job's process died before returning (killed, OOM)
        _write_error(job.run_dir, str(e))
        outcome = Outcome('failed', error=_one_line(e))
      done(point, outcome)


EXECUTORS = {'local': run_local, 'processes': run_processes, 'slurm': run_slurm}


# -- the sweep ---------------------------------------------------------------------


def run_sweep(config_arg: str, workdir: str, *, seeds: int = 1, vmap_seeds: bool = False,
              overrides: dict[str, Any] | None = None, executor: str = 'local',
              retry_failed: bool = False, report: bool = True,
              cache_dir: str | None = '', log: Callable[[str], None] = print,
              **options) -> list[dict[str, Any]]:
  """Runs every point not yet in results.jsonl; returns the sweep's records.

  cache_dir: '' = WORKDIR/xla_cache, None = no persistent compilation cache.
  options: fields of `Options` (parallel, gpus_per_node, timeout_min, ...).
  Raises SweepPreempted when a point is preempted or the sweep gets SIGTERM.
  """
  if executor not in EXECUTORS:
    raise UserError(f'--executor={executor!r}: expected one of {", ".join(EXECUTORS)}')
  overrides = dict(overrides or {})
  path, _, arg = config_arg.partition(':')
  config_arg = os.path.abspath(path) + (f':{arg}' if arg else '')  # jobs run elsewhere
  workdir = os.path.abspath(workdir)
  base = configs.load(config_arg, overrides)
  points = expand(load_grid(config_arg), seeds, base.seed, vmap_seeds)
  for point in points:
    point_config(base, point)  # unknown keys fail before anything runs
  writer = base.process_id == 0
  results_path = os.path.join(workdir, results.RESULTS)
  if writer:
    os.makedirs(workdir, exist_ok=True)
    results.write_sweep_info(workdir, config_arg, overrides, load_report(config_arg))
  if cache_dir == '':
    cache_dir = os.path.join(workdir, 'xla_cache')

  lines = results.repair(results_path) if writer else results.read(results_path)
  records = {r['name']: r for r in lines if not (retry_failed and r['status'] == 'failed')}
  if writer and len(records) < len(lines):  # --retry_failed: the failed lines go
    results.rewrite(results_path, list(records.values()))

  def done(point: Point, outcome: Outcome) -> None:
    if outcome.status == 'preempted':
      raise SweepPreempted(f'{point.name} was preempted')
    if outcome.status == 'failed':
      new = [results.failed_record(point.name, point.overrides, point_config(base, point),
                                   outcome.error)]
    else:  # vmapped seeds: a line per seed
      entries = outcome.result.get('per_seed', [{}])
      new = [results.ok_record(name, point.name, point.overrides, {**outcome.result, **entry})
             for entry, name in zip(entries, record_names(point))]
    for r in new:
      records[r['name']] = r
      if writer:
        results.append(results_path, r)
      log(f'[sweep] {r["name"]}: FAILED: {r["error"]}' if r['status'] == 'failed' else
          f'[sweep] {r["name"]}: top1 {r["top1"]:.4f} top5 {r["top5"]:.4f} '
          f'{r["size_mib"]:.3f} MiB {r["wall_s"]:.0f} s')

  pending = []
  for point in points:
    if all(name in records for name in record_names(point)):
      continue  # done (or failed: --retry_failed reruns those)
    result = _load_result(os.path.join(workdir, point.name))
    if result is not None:  # finished, but killed before its line was written
      done(point, Outcome('ok', result))
    else:
      pending.append(point)
  log(f'[sweep] {len(points)} points, {len(points) - len(pending)} already done, '
      f'{len(pending)} to run with executor={executor}')
  start = time.time()
  if pending:
    jobs = [(p, Job(config_arg, {**overrides, **p.overrides},  # the grid wins over the CLI
                    os.path.join(workdir, p.name), cache_dir)) for p in pending]
    with errors.on_sigterm(_preempt):
      EXECUTORS[executor](jobs, done, Options(os.path.join(workdir, 'submitit'), **options))
  log(f'[sweep] finished in {time.time() - start:.0f} s; results in {results_path}')
  if report and writer:
    from squeezejax import report as report_lib  # late: matplotlib
    for path in report_lib.make_report(workdir):
      log(f'[sweep] wrote {path}')
  return [records[n] for p in points for n in record_names(p) if n in records]


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(
      prog='squeezejax sweep',
      description='Run the sweep of an experiment file (get_sweep) and collect results.jsonl.')
  add = parser.add_argument
  add('--config', required=True, help='experiments/FILE.py:PRESET')
  add('--workdir', required=True, help='sweep directory (one run dir per point)')
  add('--seeds', type=int, default=1, help='seeds per grid point')
  add('--vmap_seeds', action='store_true', help='train the seeds of a point in one vmapped step')
  add('--executor', choices=EXECUTORS, default='local')
  add('--retry_failed', action='store_true', help='rerun failed points')
  add('--no_report', action='store_true', help='skip figures and tables')
  add('--compilation_cache', default='',
      help="persistent XLA cache dir ('' = WORKDIR/xla_cache, 'none' = off)")
  add('--parallel', type=int, default=1, help='concurrent runs (processes, slurm)')
  add('--gpus_per_node', type=int, default=0, help='GPUs per run (processes, slurm)')
  add('--timeout_min', type=int, default=60 * 24, help='job time limit (processes, slurm)')
  add('--slurm_partition', default='')
  add('--nodes', type=int, default=1, help='hosts per run (slurm, jax.distributed)')
  add('--tasks_per_node', type=int, default=1, help='processes per host (slurm)')
  args = parser.parse_args(argv)
  if args.parallel < 1:
    raise UserError(f'--parallel={args.parallel}: expected an integer >= 1')
  options = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
             if f.name != 'folder'}
  try:
    run_sweep(args.config, args.workdir, seeds=args.seeds, vmap_seeds=args.vmap_seeds,
              overrides=overrides, executor=args.executor, retry_failed=args.retry_failed,
              report=not args.no_report,
              cache_dir=None if args.compilation_cache == 'none' else args.compilation_cache,
              **options)
  except SweepPreempted as e:
    print(f'squeezejax sweep: preempted ({e}); rerun the same command to resume',
          file=sys.stderr)
    return 143
  return 0
