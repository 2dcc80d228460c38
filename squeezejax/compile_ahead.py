"""Compiling a sweep's next point while this one trains (the local executor, on CPU).

Beyond its training steps, a point of a new network spends most of its time
compiling its programs (docs/performance.md). One helper process, started by the
sweep at the lowest CPU priority (SCHED_IDLE: it runs on cycles the trainer leaves
idle, and gives way to the trainer at once), builds each point's programs as the
trainer does (`programs.build`, `Programs.compile`) and compiles them into the sweep's
persistent compilation cache while the point before it trains; the trainer then
loads them from the cache. For TFDS's in-memory datasets the helper builds on a
placeholder of each split (data.arrays.placeholder: the same shapes, classes and
statistics, zeros for pixels), so it neither imports TensorFlow nor reads the data.

Before a point starts, the sweep waits for the helper to finish it while the helper
makes progress (with the trainer idle it has the cores), and no longer: a helper
that is starved or stuck costs half a second, and the trainer compiles for itself. The
helper runs in a session of its own (a Ctrl-C reaches the sweep only); the sweep
ends it by closing its input, or kills it when the sweep stops early.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from squeezejax.job import Job, one_line

CHECK_S = 0.5  # how often a waiting sweep looks at the helper's progress
MIN_PROGRESS = 0.25  # cores' worth of CPU the helper must be using to be waited for
IDLE_EXIT_S = 5  # for an idle helper to exit once its input closes


class CompileAhead:
  """The sweep's side: `submit` a job before the one it follows starts, `wait` for
  it before it starts itself. Does nothing where it cannot help (`enabled`)."""

  def __init__(self, cache_dir: str | None, log_path: str):
    self.cache_dir, self.log_path = cache_dir, log_path
    self.enabled = bool(cache_dir) and _on_cpu()
    self._proc: subprocess.Popen | None = None
    self._reports = b''
    self.finished: set[str] = set()  # run dirs the helper is done with
    self._submitted: set[str] = set()

  @property
  def pid(self) -> int | None:
    return self._proc.pid if self._proc else None

  def __enter__(self) -> CompileAhead:
    return self

  def __exit__(self, exc_type, *_) -> None:
    self.close(finished=exc_type is None)

  def submit(self, job: Job) -> None:
    if not self.enabled:
      return
    if self._proc is None:
      self._start()
    try:
      self._proc.stdin.write((json.dumps(
          {'id': job.run_dir, 'config_arg': job.config_arg, 'overrides': job.overrides})
          + '\n').encode())
      self._proc.stdin.flush()
      self._submitted.add(job.run_dir)
    except OSError:  # the helper has exited: the trainer compiles for itself
      self.enabled = False

  def wait(self, job: Job) -> None:
    """Returns once the helper has compiled `job`, has stopped making progress on it,
    or has exited."""
    if job.run_dir not in self._submitted:
      return
    clock = _cpu_seconds(self._proc.pid)
    while job.run_dir not in self.finished:
      ready, _, _ = select.select([self._proc.stdout], [], [], CHECK_S)
      if ready:
        chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
        if not chunk:  # exited
          self.enabled = False
          return
        self._reports += chunk
        *lines, self._reports = self._reports.split(b'\n')
        # A point the helper could not compile (its log says why) fails in its own
        # run, with its own error, or compiles there.
        self.finished.update(json.loads(line)['id'] for line in lines)
      else:
        now = _cpu_seconds(self._proc.pid)
        if now is None or clock is None or now - clock < MIN_PROGRESS * CHECK_S:
          return  # starved by other work, or stuck
        clock = now

  def close(self, finished: bool = True) -> None:
    """Ends the helper: once idle, it exits when its input closes; a sweep stopped
    early kills it."""
    if self._proc is None:
      return
    try:
      self._proc.stdin.close()
    except OSError:  # it has exited, with a request unread
      pass
    try:
      self._proc.wait(timeout=IDLE_EXIT_S if finished else 0)
    except subprocess.TimeoutExpired:
      self._proc.kill()
      self._proc.wait()
    self._proc = None

  def _start(self) -> None:
    os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
    with open(self.log_path, 'ab') as log_file:
      self._proc = subprocess.Popen(
          [sys.executable, '-m', 'squeezejax.compile_ahead', self.cache_dir],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
          start_new_session=True)


def _on_cpu() -> bool:
  """Only where the points train on this machine's CPU: the helper would otherwise
  take accelerator memory of its own."""
  from squeezejax import parallel  # late: importing it imports JAX
  parallel.configure_host()  # as each job does, before JAX starts
  import jax
  return jax.default_backend() == 'cpu'


def _cpu_seconds(pid: int) -> float | None:
  """User + system CPU seconds of a process and its threads (Linux), or None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return None


# -- the helper process -----------------------------------------------------------------


def _lowest_priority() -> None:
  """SCHED_IDLE for this process and every thread it starts (nice 19 where the OS has
  no SCHED_IDLE)."""
  try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
  except (AttributeError, OSError):
    os.nice(19)


def compile_point(config) -> None:
  """Builds and compiles one point's programs as its trainer will."""
  from squeezejax import configs, data, parallel, programs
  configs.validate(config)
  if config.num_processes > 1:
    raise ValueError('a multi-process point compiles in its own processes')
  mesh = parallel.make_mesh(config.num_devices)
  source = data.make_input(config, placeholder=True)  # Fashion-MNIST, CIFAR-10: no reading
  run = programs.build(config, mesh, source)
  run.compile(next(run.batches(source, 0)), source)


def main(cache_dir: str) -> None:
  """Reads one job per line on stdin; compiles each; reports `{"id", "status"}` lines
  on stdout. Exits when stdin closes (the sweep has ended or died)."""
  _lowest_priority()
  reports = os.fdopen(os.dup(1), 'w')
  os.dup2(2, 1)  # anything else printed goes to the log
  from squeezejax import configs, job as job_lib, parallel
  parallel.configure_host()
  job_lib.setup_compilation_cache(cache_dir)
  import jax
  for line in sys.stdin:
    request: dict[str, Any] = json.loads(line)
    t = time.time()
    try:
      compile_point(configs.load(request['config_arg'], request['overrides']))
      status = 'ok'
    except Exception as e:  # pylint: disable=broad-except (the trainer will say it)
      status = one_line(e)
    print(f'{request["id"]}: {status} in {time.time() - t:.1f} s', file=sys.stderr,
          flush=True)
    reports.write(json.dumps({'id': request['id'], 'status': status}) + '\n')
    reports.flush()
    jax.clear_caches()  # the next point's programs are new ones


if __name__ == '__main__':
  main(sys.argv[1])
