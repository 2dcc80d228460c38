r"""Design-space sweeps: expand a grid, run each point in its own workdir, collect.

  squeezejax sweep --config=experiments/fig3a_squeeze_ratio.py:quick --workdir=runs/fig3a \
      [--seeds=3 [--vmap_seeds[=on]]] [--executor=local|processes|slurm] [--parallel=2] \
      [--no_compile_ahead] [--status] [--config.X=...]

A sweep is an experiment file's `get_config(arg)`, `get_sweep(arg)` (a list of
override dicts with dotted keys, one per point) and optionally `get_report(arg)`
(what its report draws: squeezejax.report), kept in WORKDIR/sweep.json. Each point
x seed runs in WORKDIR/<name> (`squeeze_ratio=0.25,seed=0`) and gets one line in
WORKDIR/results.jsonl (squeezejax.results), the sweep's only state (pycls): a rerun
skips points that have a line, appends the line of a point whose result.json exists
and resumes the others from their checkpoints, so a sweep killed at any moment and
rerun ends with each point once. A failed point is recorded and the sweep goes on
(`--retry_failed` runs it again; the sweep exits 1, counting them in its last line);
a preempted one stops the sweep, as SIGTERM to the sweep does (exit 143; a rerun
resumes). Only process 0 writes, holding WORKDIR/.lock: a second sweep of the same
workdir is refused, naming the first.

Each point's resolved config is kept in RUN_DIR/point.json. When the experiment file
(or anything it reads) changes, a rerun refuses the points it changed, saying what
changed; `--rerun_changed` moves their old runs to WORKDIR/replaced/ and reruns them,
so a sweep never mixes points of two configs.

Executors: `local` (sequential, in this process, with the next point's programs
compiled meanwhile by a helper process: squeezejax.compile_ahead), `processes` (submitit's
LocalExecutor: `--parallel` subprocess jobs, each on its own GPUs or CPU cores),
`slurm` (a SLURM job array, squeezejax.slurm). All jobs share a persistent XLA
compilation cache (WORKDIR/xla_cache), so points with the same shapes (seeds)
compile once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import sys
import time
from typing import Any, Callable

from squeezejax import cli
from squeezejax import configs
from squeezejax import errors
from squeezejax import files
from squeezejax import results
from squeezejax import slurm
from squeezejax.errors import UserError
from squeezejax.job import RESULT_JSON, Job, Outcome, SweepPreempted  # noqa: F401
from squeezejax.job import load_result, one_line, preempt, submitit, write_error

STOP_GRACE_S = 60  # for stopped local jobs to save their checkpoints


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


# -- executors -------------------------------------------------------------------
# Each runs its (point, job) pairs, calling `done(point, outcome)` as each finishes;
# `done` raises SweepPreempted for a preempted point, then the others are stopped.

Done = Callable[[Point, Outcome], None]


@dataclasses.dataclass
class Options:
  """How the executors run jobs (the command-line flags of the same names)."""
  workdir: str  # the sweep's; submitit's job files and logs go to WORKDIR/submitit
  compile_ahead: bool = True  # local: compile the next point while one trains
  parallel: int = 1  # processes
  gpus_per_node: int = 0  # GPUs per run
  timeout_min: int = 60 * 24
  # slurm: 0 and '' leave a setting to the cluster's defaults
  slurm_partition: str = ''
  cpus_per_task: int = 0
  nodes: int = 1
  tasks_per_node: int = 1
  array_parallelism: int = 0  # 0: every job of the array at once
  sbatch: dict[str, Any] = dataclasses.field(default_factory=dict)  # any other option
  max_attempts: int = 5  # runs of a job that is preempted or times out, at most
  no_wait: bool = False  # submit, collect what has finished, return
  log: Callable[[str], None] = print

  @property
  def folder(self) -> str:
    return os.path.join(self.workdir, 'submitit')


def run_local(jobs: list[tuple[Point, Job]], done: Done, options: Options) -> None:
  """Sequential, in this process; compiled shapes are reused through the cache, and
  each point's programs are compiled while the one before it trains
  (squeezejax.compile_ahead; --no_compile_ahead turns that off)."""
  from squeezejax import compile_ahead  # pylint: disable=g-import-not-at-top
  enabled = options.compile_ahead and len(jobs) > 1
  with compile_ahead.CompileAhead(jobs[0][1].cache_dir if enabled else None,
                                  os.path.join(options.workdir, 'compile_ahead.log')) as ahead:
    for i, (point, job) in enumerate(jobs):
      if i + 1 < len(jobs):
        ahead.submit(jobs[i + 1][1])
      ahead.wait(job)
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


def run_processes(jobs: list[tuple[Point, Job]], done: Done, options: Options) -> None:
  """submitit's LocalExecutor: up to `parallel` subprocess jobs, each on its own devices."""
  executor = submitit().LocalExecutor(folder=options.folder)
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


def _collect(running: dict[Any, tuple[Point, Job, Any]], done: Done, poll_s: float) -> None:
  """Waits `poll_s`, then passes each finished job's outcome to `done`."""
  time.sleep(poll_s)
  for key, (point, job, handle) in list(running.items()):
    if handle.done():
      del running[key]
      try:
        outcome = handle.result()
      except Exception as e:  # the job's process died before returning (killed, OOM)
        write_error(job.run_dir, str(e))
        outcome = Outcome('failed', error=one_line(e))
      done(point, outcome)


EXECUTORS = {'local': run_local, 'processes': run_processes, 'slurm': slurm.run}


# -- the sweep ---------------------------------------------------------------------


VMAP_SEEDS = ('auto', 'on', 'off')


def seeds_in_one_step(vmap_seeds: bool | str, executor: str,
                      log: Callable[[str], None] = print) -> bool:
  """--vmap_seeds: 'on' (or True) trains a point's seeds in one step; 'auto' does too,
  except where the points train on this machine's CPU: there, with oneDNN's
  convolutions, the seeds one after another are faster (docs/performance.md), and
  the sweep says it took that path."""
  choice = {True: 'on', False: 'off'}.get(vmap_seeds, vmap_seeds)
  if choice not in VMAP_SEEDS:
    raise UserError(f'--vmap_seeds={vmap_seeds}: expected one of {", ".join(VMAP_SEEDS)}')
  if choice == 'auto' and executor != 'slurm':
    import jax  # pylint: disable=g-import-not-at-top (the slurm driver needs no JAX)
    if jax.default_backend() == 'cpu':
      log('[sweep] --vmap_seeds: on CPU the seeds run one after another, faster there than '
          'one step for all (--vmap_seeds=on forces one step)')
      return False
  return choice != 'off'


def run_sweep(config_arg: str, workdir: str, *, seeds: int = 1,
              vmap_seeds: bool | str = False,
              overrides: dict[str, Any] | None = None, executor: str = 'local',
              retry_failed: bool = False, rerun_changed: bool = False, status: bool = False,
              report: bool = True, cache_dir: str | None = '',
              log: Callable[[str], None] = print, **options) -> list[dict[str, Any]]:
  """Runs every point not yet in results.jsonl; returns the sweep's records.

  cache_dir: '' = WORKDIR/xla_cache, None = no persistent compilation cache.
  status: print each point's state and return, writing nothing.
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
  vmap = seeds > 1 and seeds_in_one_step(vmap_seeds, executor, log)
  points = expand(load_grid(config_arg), seeds, base.seed, vmap)
  for point in points:
    point_config(base, point)  # unknown keys fail before anything runs
  results_path = os.path.join(workdir, results.RESULTS)
  if status:
    slurm.print_status(points, workdir, log)
    records = {r['name']: r for r in results.read(results_path)}
    return [records[n] for p in points for n in record_names(p) if n in records]
  writer = base.process_id == 0
  with files.lock(workdir, 'squeezejax sweep') if writer else contextlib.nullcontext():
    if writer:
      results.write_sweep_info(workdir, config_arg, overrides, load_report(config_arg))
    if cache_dir == '':
      cache_dir = os.path.join(workdir, 'xla_cache')

    lines = results.repair(results_path) if writer else results.read(results_path)
    dropped = _changed_points(base, points, lines, workdir, config_arg,
                              rerun_changed and writer, log)
    dropped |= {r.get('run_dir') for r in lines if retry_failed and r['status'] == 'failed'}
    records = {r['name']: r for r in lines if r.get('run_dir') not in dropped}
    if writer and dropped:  # --rerun_changed, --retry_failed: their lines and jobs go
      if len(records) < len(lines):
        results.rewrite(results_path, list(records.values()))
      jobs = results.read_jobs(workdir)
      if dropped & jobs.keys():
        results.write_jobs(workdir, {k: v for k, v in jobs.items() if k not in dropped})

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
            f'{r["size_mib"]:.3f} MiB {r["wall_s"]:.0f} s'
            + (f' ({r["overhead_s"]:.1f} s beyond its steps)' if r.get('overhead_s') else ''))

    pending = []
    for point in points:
      if all(name in records for name in record_names(point)):
        continue  # done (or failed: --retry_failed reruns those)
      result = load_result(os.path.join(workdir, point.name))
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
      if writer:  # what each point runs with, for the next rerun to compare
        for p, job in jobs:
          results.write_point(job.run_dir, p.overrides, point_config(base, p).to_dict())
      if base.num_processes > 1:  # jax.distributed starts in the trainer, before JAX runs
        options['compile_ahead'] = False
      with errors.on_sigterm(preempt):
        EXECUTORS[executor](jobs, done, Options(workdir, log=log, **options))
    finished = [records[n] for p in points for n in record_names(p) if n in records]
    left = sum(len(record_names(p)) for p in points) - len(finished)
    if left:  # --no_wait
      log(f'[sweep] {left} point(s) not finished yet: rerun the same command to collect them')
      return finished
    log(f'[sweep] finished in {time.time() - start:.0f} s; results in {results_path}')
    if report and writer:
      from squeezejax import report as report_lib  # late: matplotlib
      for path in report_lib.make_report(workdir, log=log):  # log: the findings
        log(f'[sweep] wrote {path}')
    return finished


def _changed_points(base, points: list[Point], lines: list[dict[str, Any]], workdir: str,
                    config_arg: str, rerun_changed: bool, log: Callable[[str], None]
                    ) -> set[str]:
  """Run dirs (of the grid's points, or of results lines) whose recorded config is not
  the one the experiment file gives now: refused, or with `rerun_changed` moved to
  WORKDIR/replaced/ and returned, for their lines to be dropped and the points rerun."""
  overrides = {r['run_dir']: r['overrides'] for r in lines
               if {'run_dir', 'overrides'} <= r.keys()}
  overrides.update({p.name: p.overrides for p in points})
  # A config field added to the trainer since a point ran counts as its default there.
  defaults = configs.base_config().to_dict()
  changed = {}
  for name, point_overrides in overrides.items():
    old = results.recorded_config(os.path.join(workdir, name))
    old = old if old is None else {**defaults, **old}
    new = point_config(base, Point(name, point_overrides)).to_dict()
    if old is not None and (diff := results.config_changes(old, new)):
      changed[name] = diff
  if not changed:
    return set()
  name, diff = next(iter(changed.items()))
  what = (f'{len(changed)} point(s) ran with another config than {config_arg} gives now '
          f'({name}: {"; ".join(diff[:3])}{"; ..." if len(diff) > 3 else ""})')
  if not rerun_changed:
    raise UserError(f'{what}: rerun them with --rerun_changed (their old runs move to '
                    f'{os.path.join(workdir, "replaced")}), or use a new --workdir')
  if busy := slurm.live_jobs(workdir, list(changed)):
    raise UserError(f'--rerun_changed: {busy[0]} is still queued or running: wait for it, '
                    'or scancel it, then rerun')
  target = os.path.join(workdir, 'replaced', time.strftime('%Y%m%d-%H%M%S'))
  for name in changed:
    if os.path.isdir(os.path.join(workdir, name)):
      os.makedirs(target, exist_ok=True)
      os.rename(os.path.join(workdir, name), os.path.join(target, name))
  log(f'[sweep] --rerun_changed: {what}; their old runs are in {target}')
  return set(changed)


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(
      prog='squeezejax sweep',
      description='Run the sweep of an experiment file (get_sweep) and collect results.jsonl.')
  add = parser.add_argument
  add('--config', required=True, help='experiments/FILE.py:PRESET')
  add('--workdir', required=True, help='sweep directory (one run dir per point)')
  add('--seeds', type=int, default=1, help='seeds per grid point')
  add('--vmap_seeds', nargs='?', const='auto', default='off', choices=VMAP_SEEDS,
      help='train the seeds of a point in one step (config.seed_axis: vmap, or map on '
           'CPU); alone: auto, which on CPU runs them one after another (faster there)')
  add('--executor', choices=EXECUTORS, default='local')
  add('--retry_failed', action='store_true', help='rerun failed points')
  add('--rerun_changed', action='store_true',
      help='rerun points whose config changed since they ran (old runs: WORKDIR/replaced/)')
  add('--status', action='store_true', help="print each point's state and job id, and exit")
  add('--no_report', action='store_true', help='skip figures and tables')
  add('--compilation_cache', default='',
      help="persistent XLA cache dir ('' = WORKDIR/xla_cache, 'none' = off)")
  add('--no_compile_ahead', dest='compile_ahead', action='store_false',
      help='local: do not compile the next point while one trains')
  add('--parallel', type=int, default=1, help='concurrent runs (processes)')
  add('--gpus_per_node', type=int, default=0, help='GPUs per run (processes, slurm)')
  add('--timeout_min', type=int, default=60 * 24, help='job time limit (processes, slurm)')
  slurm.add_flags(parser)
  args = parser.parse_args(argv)
  for flag, least in (('parallel', 1), ('gpus_per_node', 0), ('timeout_min', 1)):
    if getattr(args, flag) < least:
      raise UserError(f'--{flag}={getattr(args, flag)}: expected an integer >= {least}')
  slurm.check_flags(parser, args)
  if not args.compile_ahead and args.executor != 'local':
    raise UserError('--no_compile_ahead is a local executor option: expected --executor=local')
  options = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)
             if f.name not in ('workdir', 'log')}
  on_slurm = args.executor == 'slurm'
  try:
    records = run_sweep(
        args.config, args.workdir, seeds=args.seeds, vmap_seeds=args.vmap_seeds,
        overrides=overrides, executor=args.executor, retry_failed=args.retry_failed,
        rerun_changed=args.rerun_changed, status=args.status, report=not args.no_report,
        cache_dir=None if args.compilation_cache == 'none' else args.compilation_cache,
        **options)
  except (SweepPreempted, KeyboardInterrupt) as e:
    code = 130 if isinstance(e, KeyboardInterrupt) else 143
    if on_slurm:  # the jobs are the cluster's: they go on without the driver
      print('squeezejax sweep: stopped; the SLURM jobs keep running: rerun the same command '
            'to collect them', file=sys.stderr)
      return code
    if isinstance(e, KeyboardInterrupt):
      raise
    print(f'squeezejax sweep: preempted ({e}); rerun the same command to resume',
          file=sys.stderr)
    return code
  failed = [r for r in records if r['status'] == 'failed']
  if failed and not args.status:
    sys.stdout.flush()  # this is the last line
    print(f'squeezejax sweep: {len(failed)} of {len(records)} points failed (first: '
          f'{failed[0]["name"]}: {failed[0]["error"]}); --retry_failed reruns them',
          file=sys.stderr)
    return 1
  return 0
