"""One sweep point's training as a job: in the sweep's process, a local subprocess
(submitit's LocalExecutor) or a SLURM job (squeezejax.slurm submits it).

A job returns an `Outcome` instead of raising, so that the driver, whichever
process the job ran in, tells a failure from a preemption by its status.

On SLURM: SLURM's SIGTERM (scancel, preemption, `scontrol requeue`) and the USR2
warning before the time limit both make the trainer save a checkpoint at its
current step; the job then exits without a result, after requeuing itself on USR2.
SLURM runs a requeued job again and the trainer resumes, so the run ends exactly
where an uninterrupted one would. A job requeued `max_attempts - 1` times does not
start again: it fails, and the sweep goes on. A job of several tasks starts
jax.distributed from SLURM's environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import traceback
from typing import Any

from squeezejax import configs
from squeezejax import errors
from squeezejax import files
from squeezejax.errors import UserError

RESULT_JSON = 'result.json'  # written atomically by the trainer when a run is done


class SweepPreempted(BaseException):
  """SIGTERM reached the sweep or one of its runs: stop; a rerun resumes from checkpoints.

  A BaseException, like KeyboardInterrupt: the signal can arrive inside any code (an
  experiment file's get_config), whose `except Exception` must not turn it into a failure.
  """


def preempt():
  raise SweepPreempted('SIGTERM')


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a job returns: 'ok' with the trainer's result, 'failed' with one line, or
  'preempted' (a checkpoint was saved; a rerun resumes)."""
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
  max_attempts: int = 0  # SLURM: runs of a requeued job (0: no limit)

  def __call__(self) -> Outcome:
    # SIGTERM before or after the trainer's own handler (which saves a checkpoint
    # first) also ends the job as preempted: the point must not be recorded failed.
    with errors.on_sigterm(preempt), _slurm_signals() as warned:
      try:
        _check_attempts(self.max_attempts)
        if self.cores:  # before configure_host, which gives JAX a device per core
          os.sched_setaffinity(0, self.cores)
        from squeezejax import parallel  # late: importing it imports JAX
        parallel.configure_host()  # a fresh job process needs it; then a no-op
        setup_compilation_cache(self.cache_dir)
        _initialize_distributed()  # a multi-task SLURM job: before JAX starts
        config = configs.load(self.config_arg, self.overrides)
        from squeezejax import train
        return Outcome('ok', train.train_and_evaluate(config, self.run_dir))
      except (errors.Preempted, SweepPreempted):
        _leave(warned)  # on SLURM: requeued or cancelled, and no result
        return Outcome('preempted')
      except Exception as e:  # a failing point must not stop the sweep
        if os.environ.get('SLURM_PROCID', '0') == '0':  # one task of a job writes
          write_error(self.run_dir, traceback.format_exc())
        return Outcome('failed', error=one_line(e))

  def checkpoint(self):
    """submitit's LocalExecutor requeues this on its timeout: the same job, resuming.
    (On SLURM, `_slurm_signals` replaces submitit's handler that calls it.)"""
    import submitit
    return submitit.helpers.DelayedSubmission(self)


def one_line(error: BaseException) -> str:
  return f'{type(error).__name__}: {(str(error).strip().splitlines() or [""])[0]}'.strip()


def write_error(run_dir: str, text: str) -> None:
  os.makedirs(run_dir, exist_ok=True)
  files.write_atomic(os.path.join(run_dir, 'error.txt'), text)


def load_result(run_dir: str) -> dict[str, Any] | None:
  try:
    with open(os.path.join(run_dir, RESULT_JSON)) as f:
      return json.load(f)
  except (OSError, ValueError):  # none yet (the trainer writes it atomically at the end)
    return None


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


def submitit():
  try:
    import submitit as module
    return module
  except ImportError:
    raise UserError('this executor needs submitit: pip install squeezejax[cluster]') from None


# -- on SLURM ---------------------------------------------------------------------------


def in_slurm_job() -> bool:
  return os.environ.get('SUBMITIT_EXECUTOR') == 'slurm'


def slurm_job_id() -> str:
  array, index = os.environ.get('SLURM_ARRAY_JOB_ID'), os.environ.get('SLURM_ARRAY_TASK_ID')
  return f'{array}_{index}' if array and index else os.environ.get('SLURM_JOB_ID', '?')


@contextlib.contextmanager
def _slurm_signals():
  """In a SLURM job: USR2 (the time-limit warning, or a preemption notice) becomes a
  SIGTERM for the trainer (save and stop), remembered so that `_leave` requeues.
  Replaces submitit's USR2 handler, which requeues without saving at this step."""
  warned: list[int] = []
  if not in_slurm_job():
    yield warned
    return

  def usr2(signum, frame):
    del frame
    warned.append(signum)
    os.kill(os.getpid(), signal.SIGTERM)

  previous = signal.signal(signal.SIGUSR2, usr2)
  try:
    yield warned
  finally:
    signal.signal(signal.SIGUSR2, previous)


def _leave(warned: list[int]) -> None:
  """In a SLURM job that saved a checkpoint and stopped: requeue it after USR2 (task 0),
  then exit without a result, so that the driver waits for its next run (or, after
  scancel, sees it end without one). Outside SLURM: returns."""
  if not in_slurm_job():
    return
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # leaving already; a requeue sends one
  if warned and os.environ.get('SLURM_PROCID', '0') == '0':
    print(f'squeezejax: USR2: requeuing SLURM job {slurm_job_id()}', file=sys.stderr)
    subprocess.run(['scontrol', 'requeue', slurm_job_id()], check=False, timeout=60)
  raise SystemExit(143)  # not an Exception: submitit writes no result for it


def _check_attempts(max_attempts: int) -> None:
  """Refuses to start a SLURM job's attempt number `max_attempts + 1`."""
  restarts = int(os.environ.get('SLURM_RESTART_COUNT', '0') or 0)
  if in_slurm_job() and max_attempts and restarts >= max_attempts:
    raise UserError(f'SLURM job {slurm_job_id()} was requeued {restarts} times (preempted, '
                    f'timed out or its node failed): giving up after --max_attempts='
                    f'{max_attempts}')


def _initialize_distributed() -> None:
  """In a SLURM job of several tasks: jax.distributed from SLURM's environment (JAX
  finds the coordinator, process count and id itself), before the trainer starts."""
  # SLURM_STEP_NUM_TASKS: set inside an srun step only (a batch script's one process
  # with --ntasks=2 must not wait for a second one).
  if not in_slurm_job() or int(os.environ.get('SLURM_STEP_NUM_TASKS', '1')) <= 1:
    return
  import jax
  if not jax.distributed.is_initialized():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU-only jobs
    jax.distributed.initialize()
