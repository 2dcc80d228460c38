"""Sweeps on a real SLURM cluster with accounting (scripts/slurm_local.sh): a killed
driver re-attaches, failed and cancelled jobs are recorded, requeue and USR2 resume
exactly, and a 2-task point matches a 1-task run.

Real sbatch, sacct, scontrol and scancel. Skipped, saying why, where no cluster
answers; SQUEEZEJAX_REQUIRE_SLURM=1 (as `.ci/run` sets) turns the skip into a
failure. Jobs run the `test` preset (tiny network, synthetic data) on one CPU each
and share the suite's persistent compilation cache.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import submitit  # noqa: F401  now: importing it later resets logging mid-test

from squeezejax import checkpoint, configs, results, slurm, sweep, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG3A = os.path.join(ROOT, 'experiments', 'fig3a_squeeze_ratio.py')
CACHE = os.environ['JAX_COMPILATION_CACHE_DIR']  # conftest's, shared by the suite
LOCAL_CONF = os.path.join(os.environ.get('SQUEEZEJAX_SLURM_DIR', '/tmp/squeezejax-slurm'),
                          'etc', 'slurm.conf')
START = 'start one with `sudo bash scripts/slurm_local.sh start`'


def _no_cluster() -> str | None:
  """Why SLURM jobs cannot run here, or None."""
  if not shutil.which('sbatch'):
    return f'sbatch is not installed: {START} (it installs SLURM)'
  if 'SLURM_CONF' not in os.environ and os.path.exists(LOCAL_CONF):
    os.environ['SLURM_CONF'] = LOCAL_CONF  # the local cluster's; jobs inherit it
  for command in (['sinfo', '--noheader', '--format=%t'], ['sacct', '-n', '-X', '-S', 'now']):
    try:
      out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
      return f'`{" ".join(command)}` timed out: {START}'
    if out.returncode or (command[0] == 'sinfo' and not re.search('idle|mix|alloc', out.stdout)):
      detail = (out.stderr.strip().splitlines() or [out.stdout.strip() or 'no node'])[0]
      return f'no SLURM cluster answers `{" ".join(command)}` ({detail}): {START}'
  return None


@pytest.fixture(scope='module', autouse=True)
def cluster():
  problem = _no_cluster()
  if problem and os.environ.get('SQUEEZEJAX_REQUIRE_SLURM') == '1':
    pytest.fail(f'SQUEEZEJAX_REQUIRE_SLURM=1, but {problem}')
  if problem:
    pytest.skip(problem)


def write_experiment(directory, grid, **config) -> str:
  """fig3a's `test` preset with these config values and this grid."""
  path = os.path.join(directory, 'exp.py')
  with open(path, 'w') as f:
    f.write(textwrap.dedent(f'''
        from squeezejax import configs
        def get_config(arg):
          c = configs.load_module({FIG3A!r}).get_config(arg)
          for key, value in {config!r}.items():
            c[key] = value
          return c
        def get_sweep(arg):
          return {grid!r}
    '''))
  return path


def driver(experiment, workdir, *flags):
  return [sys.executable, '-m', 'squeezejax', 'sweep', f'--config={experiment}:test',
          f'--workdir={workdir}', '--executor=slurm', '--cpus_per_task=1',
          f'--compilation_cache={CACHE}', '--no_report', *flags]


def sweep_slurm(experiment, workdir, **options):
  return sweep.run_sweep(f'{experiment}:test', workdir, executor='slurm', cpus_per_task=1,
                         cache_dir=CACHE, report=False, log=lambda _: None, **options)


def wait_for(what, predicate, workdir, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if value := predicate():
      return value
    time.sleep(0.5)
  queue = subprocess.run(['squeue'], capture_output=True, text=True).stdout
  logs = ''.join(open(os.path.join(workdir, 'submitit', n)).read()[-1500:]
                 for n in sorted(os.listdir(os.path.join(workdir, 'submitit')))
                 if n.endswith('.err'))
  pytest.fail(f'timed out after {timeout}s waiting for {what}\n{queue}\n{logs}')


def metric_lines(run_dir):
  try:
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f if line.strip()]
  except FileNotFoundError:
    return []


def job_id(workdir, name):
  return results.read_jobs(workdir).get(name, {}).get('job_id')


def sacct(array_id, *flags):
  """[(job id, state)] of every record of the array (sacct, parsed here)."""
  out = subprocess.run(['sacct', '-X', '-n', '-P', '-o', 'JobID,State', '-j', array_id, *flags],
                       capture_output=True, text=True, check=True).stdout
  return [tuple(line.split('|')) for line in out.splitlines()]


def ended(array_id, workdir):
  """sacct's states of the array's jobs, once none is live: the driver returns as soon
  as the results are in, while a job's process may still be exiting."""
  def final():
    found = dict(sacct(array_id))
    return found if found and not any(s.split()[0] in slurm.LIVE for s in found.values()) \
        else None
  return wait_for('the jobs to end in sacct', final, workdir, timeout=120)


def pending_after_requeues(job, restarts):
  out = subprocess.run(['scontrol', 'show', 'job', job], capture_output=True, text=True).stdout
  return 'JobState=PENDING' in out and f'Restarts={restarts} ' in out


def release(job):
  """A requeued job waits ~2 minutes (SLURM's BeginTime); let it start now."""
  subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], check=True)


def raw_lines(workdir):
  with open(os.path.join(workdir, results.RESULTS)) as f:
    return [json.loads(line) for line in f]


def test_killed_driver_reattaches_and_failures_are_recorded(tmp_path):
  """One array: a good point, an invalid design point, and a long point that is
  scancelled mid-run. The driver is SIGKILLed while jobs run; the rerun submits
  nothing, re-attaches, records each point once and exits 1 counting the failures."""
  grid = [{'spec.squeeze_ratio': 0.125}, {'spec.squeeze_ratio': 0.0},
          {'spec.squeeze_ratio': 0.125, 'total_steps': 100_000}]
  experiment = write_experiment(str(tmp_path), grid)
  workdir = str(tmp_path / 'sweep')
  good, invalid, long = (sweep.run_name({**g, 'seed': 0}) for g in grid)
  first = subprocess.Popen(driver(experiment, workdir), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  wait_for('the long point to train', lambda: metric_lines(os.path.join(workdir, long)), workdir)
  first.kill()  # SIGKILL: no cleanup of any kind
  first.wait()
  assert len(results.read_jobs(workdir)) == 3
  subprocess.run(['scancel', job_id(workdir, long)], check=True)

  out = subprocess.run(driver(experiment, workdir), capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stdout + out.stderr
  assert 'submitted 0' in out.stdout or '3 already done' in out.stdout, out.stdout
  assert out.stderr.splitlines()[-1].startswith('squeezejax sweep: 2 of 3 points failed')
  lines = raw_lines(workdir)
  assert sorted(r['name'] for r in lines) == sorted([good, invalid, long])  # each once
  by_name = {r['name']: r for r in lines}
  assert by_name[good]['status'] == 'ok' and by_name[good]['top1'] is not None
  assert by_name[invalid]['error'].startswith('UserError: ') and 'squeeze_ratio' in \
      by_name[invalid]['error']
  assert re.fullmatch(r'SLURM job \d+_2 ended CANCELLED without a result \(log: .*\)',
                      by_name[long]['error']), by_name[long]['error']
  # One array of three jobs was ever submitted; sacct has them all.
  ids = {name: job_id(workdir, name) for name in (good, invalid, long)}
  array = ids[good].split('_')[0]
  assert {i.split('_')[0] for i in ids.values()} == {array}
  assert [n for n in os.listdir(os.path.join(workdir, 'submitit'))
          if n.endswith('_submission.sh')] == [f'{array}_submission.sh']
  states = ended(array, workdir)
  assert len(states) == 3
  assert (states[ids[good]], states[ids[invalid]]) == ('COMPLETED', 'COMPLETED')
  assert states[ids[long]].startswith('CANCELLED')
  # --status: each point's state and job id.
  status = subprocess.run(driver(experiment, workdir, '--status'), capture_output=True,
                          text=True, timeout=120).stdout.splitlines()
  assert [line.split()[1:3] for line in status[:3]] == [
      ['done', ids[good]], ['failed', ids[invalid]], ['failed', ids[long]]]
  assert status[-1] == '[sweep] 1 done, 2 failed'


def test_requeue_and_usr2_resume_exactly(tmp_path):
  """`scontrol requeue`, then USR2 (the time-limit warning), mid-run: each time the job
  saves a checkpoint at its step and runs again from it; it ends with the parameters,
  losses and accuracy of an uninterrupted run of the same point."""
  experiment = write_experiment(str(tmp_path), [{'keep_checkpoints': 2}, {'keep_checkpoints': 3}],
                                total_steps=400, checkpoint_every=1000)
  workdir = str(tmp_path / 'sweep')
  sweep_slurm(experiment, workdir, no_wait=True)
  reference, interrupted = 'keep_checkpoints=2,seed=0', 'keep_checkpoints=3,seed=0'
  job = job_id(workdir, interrupted)
  run_dir = os.path.join(workdir, interrupted)
  out_log = os.path.join(workdir, 'submitit', f'{job}_0_log.out')
  steps = lambda: (metric_lines(run_dir) or [{'step': 0}])[-1]['step']
  resumed = lambda: [int(s) for s in re.findall(r'resumed from step (\d+)', open(out_log).read())]

  wait_for('step 20', lambda: steps() >= 20, workdir)
  subprocess.run(['scontrol', 'requeue', job], check=True)
  wait_for('the requeued job to wait', lambda: pending_after_requeues(job, 1), workdir)
  release(job)
  wait_for('the resumed run to pass its checkpoint by 20 steps',
           lambda: resumed() and steps() >= resumed()[0] + 20, workdir)
  subprocess.run(['scancel', '--signal=USR2', job], check=True)
  wait_for('the job to requeue itself', lambda: pending_after_requeues(job, 2), workdir)
  release(job)

  records = {r['name']: r for r in sweep_slurm(experiment, workdir)}
  first, second = resumed()
  assert 20 <= first < second < 400  # SIGTERM's own checkpoints, not periodic ones
  assert 'USR2: requeuing SLURM job' in open(out_log.replace('.out', '.err')).read()
  ended(job.split('_')[0], workdir)
  assert [s for i, s in sacct(job.split('_')[0], '--duplicates') if i == job] == [
      'REQUEUED', 'REQUEUED', 'COMPLETED']
  a, b = records[reference], records[interrupted]
  assert (b['steps'], b['final_train_loss'], b['top1'], b['top5']) == (
      a['steps'], a['final_train_loss'], a['top1'], a['top5'])
  assert [m.get('loss') for m in metric_lines(run_dir)] == [
      m.get('loss') for m in metric_lines(os.path.join(workdir, reference))]
  params = [jax.tree.map(np.asarray, checkpoint.load_model(os.path.join(workdir, name))[1])
            for name in (reference, interrupted)]
  jax.tree.map(np.testing.assert_array_equal, *params)


def test_two_task_point_matches_one_task(tmp_path):
  """--tasks_per_node=2: two SLURM tasks, jax.distributed from SLURM's environment;
  the same losses as one process (the trainer's own two-process tolerance), and one
  writer."""
  experiment = write_experiment(str(tmp_path), [{'spec.squeeze_ratio': 0.125}])
  workdir = str(tmp_path / 'sweep')
  sweep_slurm(experiment, workdir, tasks_per_node=2, no_wait=True)
  # The reference, while the job runs: one process, one device.
  reference = train.train_and_evaluate(
      configs.load(f'{FIG3A}:test', {'spec.squeeze_ratio': 0.125, 'num_devices': 1}),
      str(tmp_path / 'reference'))
  record, = sweep_slurm(experiment, workdir, tasks_per_node=2)
  job = job_id(workdir, record['name'])
  assert results.read_jobs(workdir)[record['name']]['tasks'] == 2
  log = open(os.path.join(workdir, 'submitit', f'{job}_0_log.out')).read()
  assert ' over 2 process(es)' in log
  run_dir = os.path.join(workdir, record['run_dir'])
  losses = [m['loss'] for m in metric_lines(run_dir) if 'loss' in m]
  ref_losses = [m['loss'] for m in metric_lines(str(tmp_path / 'reference')) if 'loss' in m]
  assert len(losses) == len(ref_losses) == 4  # process 1 wrote no lines
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
  assert record['top1'] == pytest.approx(reference['top1'], abs=1 / 300)
  assert len(raw_lines(workdir)) == 1
  assert ended(job.split('_')[0], workdir) == {job: 'COMPLETED'}
