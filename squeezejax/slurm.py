"""The sweep's SLURM executor: one job array per launch, re-attached to on a rerun.

Points already submitted (WORKDIR/slurm_jobs.json) and known to SLURM are
re-attached to, never submitted again; the others go into one job array
(submitit's SlurmExecutor: real sbatch), whose ids are recorded at once. Jobs
outlive the driver: killing it (or SIGTERM, Ctrl-C) leaves them queued or running,
and a rerun collects them. A job is finished when every task has written its
result, or when sacct says it ended (then, without a result, it failed: scancel,
time limit, crash). `print_status` is `squeezejax sweep --status`. What a job does
on SIGTERM, USR2 and requeues is in squeezejax.job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
from typing import Any, Callable

from squeezejax import job as job_lib
from squeezejax import results
from squeezejax.errors import UserError

LIVE = ('PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', 'REQUEUED', 'REQUEUE_HOLD',
        'REQUEUE_FED', 'RESIZING', 'SUSPENDED', 'PREEMPTED', 'SIGNALING', 'STAGE_OUT')
# Any other state (COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY,
# BOOT_FAIL, DEADLINE) is final.


def job_name(workdir: str) -> str:
  """The sweep's jobs' SLURM name: a job id recorded by this sweep but reused by the
  cluster for another job (its state wiped) is not this sweep's."""
  digest = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:8]
  return f'squeezejax-{os.path.basename(workdir)[:40]}-{digest}'


def states(job_ids: list[str], name: str = '') -> dict[str, tuple[str, int]]:
  """job id ('12_3', '13') -> (its newest SLURM state, how many times it was requeued),
  from sacct, of the jobs called `name` (any, if ''). Ids sacct does not know (yet)
  are absent; so is everything if sacct fails."""
  arrays = sorted({job_id.split('_')[0] for job_id in job_ids})
  if not arrays:
    return {}
  command = ['sacct', '--duplicates', '--allocations', '--parsable2', '--noheader',
             '--format=JobID,JobName,State'] + [f'--jobs={",".join(arrays)}']
  try:
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return {}  # a busy or restarting slurmdbd: the next poll asks again
  from submitit.slurm.slurm import read_job_id  # pylint: disable=g-import-not-at-top
  found: dict[str, tuple[str, int]] = {}
  for line in out.splitlines():  # oldest record of a job first (--duplicates)
    job_id, rest = line.split('|', 1)
    named, _, state = rest.rpartition('|')
    state = state.split(' ')[0]  # 'CANCELLED by 0'
    if name and named != name:
      continue
    for main, *index in read_job_id(job_id):  # '12_[4-6%2]': a pending array range
      for i in (range(int(index[0]), int(index[-1]) + 1) if index else [None]):
        key = main if i is None else f'{main}_{i}'
        requeued = found.get(key, ('', 0))[1] + (state == 'REQUEUED')
        found[key] = state, requeued
  return found


# -- driver ---------------------------------------------------------------------------------


def run(jobs: list[tuple[Any, job_lib.Job]], done: Callable, options) -> None:
  """sweep.EXECUTORS['slurm']: re-attaches to the points' jobs, submits the others as one
  array (sweep.Options say how), and passes each outcome to `done` as it finishes."""
  submitit = job_lib.submitit()
  from submitit.slurm.slurm import SlurmJob  # pylint: disable=g-import-not-at-top
  known = results.read_jobs(options.workdir)
  name = job_name(options.workdir)
  current = states([known[p.name]['job_id'] for p, _ in jobs if p.name in known], name)
  running, new = {}, []
  for point, job in jobs:
    entry = known.get(point.name)
    if entry and (entry['job_id'] in current or _queued(entry['job_id'], name)):
      # Queued, running or ended: never submitted twice.
      running[point.name] = point, SlurmJob(options.folder, entry['job_id'],
                                            tasks=tuple(range(entry['tasks'])))
    else:
      new.append((point, dataclasses.replace(job, max_attempts=options.max_attempts)))
  if new:
    handles = _submit(submitit, [job for _, job in new], options, name)
    tasks = options.nodes * options.tasks_per_node
    for (point, _), handle in zip(new, handles):
      known[point.name] = {'job_id': handle.job_id, 'tasks': tasks}
      running[point.name] = point, handle
    results.write_jobs(options.workdir, known)  # at once: a killed driver forgets nothing
  options.log(f'[sweep] SLURM: re-attached to {len(running) - len(new)} job(s), submitted '
              f'{len(new)}' + (f' (job array {handles[0].job_id.split("_")[0]})' if new else ''))
  start = time.time()
  while running:
    _collect(running, done, name)
    if options.no_wait:
      if running:
        options.log(f'[sweep] --no_wait: {len(running)} job(s) queued or running; rerun the '
                    'same command to collect them, or add --status to see them')
      return
    time.sleep(min(30.0, max(2.0, (time.time() - start) / 10)))  # sacct is asked per poll


def _queued(job_id: str, name: str) -> bool:
  """Whether slurmctld holds this job of ours: sacct may not know a job submitted a
  moment ago (a driver killed right after sbatch)."""
  try:
    out = subprocess.run(['squeue', '--noheader', '--format=%j', f'--jobs={job_id}'],
                         capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.SubprocessError):
    return False
  return out.stdout.strip() == name


def _submit(submitit, jobs: list[job_lib.Job], options, name: str) -> list[Any]:
  try:
    executor = submitit.SlurmExecutor(folder=options.folder)
  except RuntimeError as e:  # no srun: not a SLURM machine
    raise UserError(f'--executor=slurm: {e}') from None
  parameters = {'job_name': name, 'time': options.timeout_min, 'nodes': options.nodes,
                'ntasks_per_node': options.tasks_per_node,
                'array_parallelism': options.array_parallelism or len(jobs),
                # requeue: SLURM may requeue it (preemption, node failure), and it may
                # requeue itself (USR2), where the cluster's default says otherwise.
                'additional_parameters': {'requeue': True, **options.sbatch}}
  for key, value in (('cpus_per_task', options.cpus_per_task),
                     ('gpus_per_node', options.gpus_per_node),
                     ('partition', options.slurm_partition)):
    if value:  # unset: the cluster's default
      parameters[key] = value
  executor.update_parameters(**parameters)
  try:
    with executor.batch():
      handles = [executor.submit(job) for job in jobs]
  except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError,
          submitit.core.utils.FailedSubmissionError) as e:
    output = getattr(e, 'output', b'') or b''
    detail = (output.decode(errors='replace') if isinstance(output, bytes) else output).strip()
    raise UserError(f'--executor=slurm: sbatch failed: {detail or e}'.splitlines()[0]) from None
  return handles


def _collect(running: dict[str, tuple[Any, Any]], done: Callable, name: str) -> None:
  """Passes each finished job's outcome to `done` (one sacct call for all)."""
  current = states([handle.job_id for _, handle in running.values()], name)
  for key, (point, handle) in list(running.items()):
    state = current.get(handle.job_id, ('UNKNOWN', 0))[0]
    tasks = [handle.task(i) for i in range(handle.num_tasks)]
    have_results = all(task.paths.result_pickle.exists() for task in tasks)
    if not have_results and state in LIVE + ('UNKNOWN',):
      continue
    del running[key]
    if not have_results and state != 'COMPLETED':  # COMPLETED: wait for its files (NFS)
      stderr = tasks[0].paths.stderr
      done(point, job_lib.Outcome('failed', error=f'SLURM job {handle.job_id} ended {state} '
                                f'without a result (log: {stderr})'))
      continue
    try:
      outcomes = [task.result() for task in tasks]
    except Exception as e:  # pylint: disable=broad-except  (no result after all)
      done(point, job_lib.Outcome('failed', error=job_lib.one_line(e)))
      continue
    done(point, next((o for o in outcomes if o.status != 'ok'), outcomes[0]))


def print_status(points: list[Any], workdir: str,
                 log: Callable[[str], None] = print) -> dict[str, int]:
  """Each point's state (done, failed, pending, running, requeued, ...) with its job
  id: from results.jsonl, and from sacct for the points submitted to SLURM."""
  from squeezejax import sweep  # pylint: disable=g-import-not-at-top (it imports this)
  records = {r['name']: r for r in results.read(os.path.join(workdir, results.RESULTS))}
  jobs = results.read_jobs(workdir)
  current = (states([e['job_id'] for e in jobs.values()], job_name(workdir))
             if shutil.which('sacct') else {})
  counts: dict[str, int] = {}
  for point in points:
    job_id = jobs.get(point.name, {}).get('job_id', '')
    state, requeued = current.get(job_id, ('', 0))
    run_dir = os.path.join(workdir, point.name)
    for name in sweep.record_names(point):
      record = records.get(name)
      if record:
        label = record['status'].replace('ok', 'done')
        detail = record.get('error') or f'top1 {record.get("top1")}'
      elif state in LIVE:
        label = 'requeued' if requeued and state in ('PENDING', 'REQUEUED') else (
            'pending' if state == 'PENDING' else 'running')
        detail = f'{state}' + (f', requeued {requeued}x' if requeued else '')
      elif state or os.path.exists(os.path.join(run_dir, job_lib.RESULT_JSON)):
        label, detail = 'ended', f'{state or "finished"}: rerun the sweep to collect it'
      elif job_id:
        label, detail = 'unknown', 'sacct does not know this job'
      else:
        label = 'started' if os.path.isdir(run_dir) else 'not started'
        detail = ''
      counts[label] = counts.get(label, 0) + 1
      log(f'{name:<44} {label:<11} {job_id or "-":<10} {detail}'.rstrip())
  log('[sweep] ' + ', '.join(f'{n} {label}' for label, n in counts.items()))
  return counts


# -- command line ---------------------------------------------------------------------------

FLAGS = ('slurm_partition', 'cpus_per_task', 'nodes', 'tasks_per_node', 'array_parallelism',
         'sbatch', 'max_attempts', 'no_wait')


def add_flags(parser) -> None:
  """`squeezejax sweep`'s --executor=slurm flags (sweep.Options' fields of the same names)."""
  add = parser.add_argument_group('--executor=slurm').add_argument
  add('--slurm_partition', default='', help="'' = the cluster's default")
  add('--cpus_per_task', type=int, default=0, help="0 = the cluster's default")
  add('--nodes', type=int, default=1, help='hosts per run (jax.distributed)')
  add('--tasks_per_node', type=int, default=1, help='processes per host (jax.distributed)')
  add('--array_parallelism', type=int, default=0, help='jobs running at once (0 = all)')
  add('--sbatch', action='append', default=[], metavar='KEY[=VALUE]',
      help='any other sbatch option, e.g. --sbatch=account=abc (repeatable)')
  add('--max_attempts', type=int, default=5, help='runs of a preempted or timed-out job')
  add('--no_wait', action='store_true', help='submit, and return (a rerun collects)')


def check_flags(parser, args) -> None:
  """One-line errors for values out of range, and for SLURM flags without SLURM."""
  for flag, least in (('cpus_per_task', 0), ('nodes', 1), ('tasks_per_node', 1),
                      ('array_parallelism', 0), ('max_attempts', 1)):
    if getattr(args, flag) < least:
      raise UserError(f'--{flag}={getattr(args, flag)}: expected an integer >= {least}')
  given = [f for f in FLAGS if getattr(args, f) != parser.get_default(f)]
  if args.executor != 'slurm' and given and not args.status:
    raise UserError(f'--{given[0]} is a SLURM option: expected --executor=slurm')
  tasks = args.nodes * args.tasks_per_node
  if args.gpus_per_node and tasks > 1 and args.tasks_per_node != args.gpus_per_node:
    raise UserError(  # JAX's SLURM detection gives each task the GPU of its local rank
        f'--nodes={args.nodes} x --tasks_per_node={args.tasks_per_node} with --gpus_per_node='
        f'{args.gpus_per_node}: a point of several tasks runs one per GPU, expected '
        f'--tasks_per_node={args.gpus_per_node}')
  if args.executor == 'slurm' and args.parallel != 1:
    raise UserError(f'--parallel={args.parallel} is for --executor=processes: on SLURM, '
                    'use --array_parallelism')
  args.sbatch = dict(_sbatch_option(text) for text in args.sbatch)


def _sbatch_option(text: str) -> tuple[str, Any]:
  key, eq, value = text.partition('=')
  if not re.fullmatch(r'[a-z][a-z0-9_-]*', key):
    raise UserError(f'--sbatch={text!r}: expected KEY=VALUE or KEY, an sbatch long option '
                    'without its dashes (e.g. account=abc, qos=high, exclusive)')
  return key, value if eq else True


def live_jobs(workdir: str, names: list[str]) -> list[str]:
  """'NAME (job 12_3, RUNNING)' for each of these points whose SLURM job is not over."""
  jobs = results.read_jobs(workdir)
  ids = {name: jobs[name]['job_id'] for name in names if name in jobs}
  current = (states(list(ids.values()), job_name(workdir))
             if ids and shutil.which('sacct') else {})
  return [f'{name} (job {job_id}, {current[job_id][0]})' for name, job_id in ids.items()
          if current.get(job_id, ('',))[0] in LIVE]
