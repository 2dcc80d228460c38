"""The sweep's compile-ahead helper (squeezejax.compile_ahead), as a real process: it
compiles a point of the trainer's `test` preset into a persistent cache, from which the
trainer then loads every program; a stopped or dead helper is not waited for."""

import os
import signal
import subprocess
import sys
import time

import pytest

from squeezejax import compile_ahead
from squeezejax.job import Job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG3A = os.path.join(ROOT, 'experiments', 'fig3a_squeeze_ratio.py')
PROGRAMS = ('jit_train_step-', 'jit_eval_step-', 'jit_init_state-')


def make_job(tmp_path, name='run', **overrides):
  return Job(f'{FIG3A}:test', {'spec.squeeze_ratio': 0.25, **overrides},
             str(tmp_path / name), str(tmp_path / 'cache'))


def entries(cache_dir):
  return sorted(e for e in os.listdir(cache_dir) if e.startswith(PROGRAMS))


def test_the_trainer_loads_what_the_helper_compiled(tmp_path):
  job = make_job(tmp_path)
  with compile_ahead.CompileAhead(job.cache_dir, str(tmp_path / 'helper.log')) as ahead:
    assert ahead.enabled
    ahead.submit(job)
    ahead.wait(job)
    assert job.run_dir in ahead.finished
    helper = ahead.pid
  with pytest.raises(ProcessLookupError):  # it exited when its input closed
    os.kill(helper, 0)
  compiled = entries(job.cache_dir)
  assert [e.split('-')[0] for e in compiled] == sorted(p[:-1] for p in PROGRAMS)
  # The point's job, in a fresh process as in a sweep, with the same cache: each of
  # its three programs has the helper's key, so it writes nothing new.
  code = ('import sys; from squeezejax.job import Job; '
          f'outcome = Job({job.config_arg!r}, {job.overrides!r}, {job.run_dir!r}, '
          f'{job.cache_dir!r})(); sys.exit(outcome.error or 0)')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=300)
  assert entries(job.cache_dir) == compiled
  assert os.path.exists(os.path.join(job.run_dir, 'result.json'))
  with open(tmp_path / 'helper.log') as f:
    assert f'{job.run_dir}: ok in' in f.read()


def test_a_stopped_or_dead_helper_is_not_waited_for(tmp_path):
  first, second = make_job(tmp_path, 'a'), make_job(tmp_path, 'b', **{'spec.freq': 1})
  with compile_ahead.CompileAhead(first.cache_dir, str(tmp_path / 'helper.log')) as ahead:
    ahead.submit(first)
    assert os.getpgid(ahead.pid) != os.getpgid(0)  # a Ctrl-C in the terminal spares it
    os.kill(ahead.pid, signal.SIGSTOP)  # starved (or stuck): no progress
    t = time.time()
    ahead.wait(first)
    assert time.time() - t < 10 * compile_ahead.CHECK_S
    assert first.run_dir not in ahead.finished
    os.kill(ahead.pid, signal.SIGKILL)
    ahead.submit(second)  # to a dead helper: nothing happens
    ahead.wait(second)
    assert not ahead.enabled


def test_a_sweep_stopped_early_kills_its_helper(tmp_path):
  job = make_job(tmp_path)
  with pytest.raises(KeyboardInterrupt):
    with compile_ahead.CompileAhead(job.cache_dir, str(tmp_path / 'helper.log')) as ahead:
      ahead.submit(job)
      helper = ahead.pid
      raise KeyboardInterrupt
  with pytest.raises(ProcessLookupError):
    os.kill(helper, 0)

