"""Sweeps: grid expansion, run names, reruns after kills, executors, preemption.

Real trainings use the trainer's tiny `test` preset (synthetic data, 8 steps): two
seeds of one point in-process, shared by the resume tests (module fixture), one
vmapped pair, and two submitit subprocess jobs. All have the same shapes, so the
persistent compilation cache makes every run after the first skip XLA compilation.
Preemption tests replace the trainer by a stand-in that needs no compilation.
"""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import submitit  # noqa: F401  now: importing it resets logging, which must not happen
                 # while a test captures output (the handlers' streams get closed)

from squeezejax import configs
from squeezejax import errors
from squeezejax import files
from squeezejax import results
from squeezejax import sweep
from squeezejax import train
from squeezejax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG3A = os.path.join(ROOT, 'experiments', 'fig3a_squeeze_ratio.py')
EXPERIMENTS = ('fig3a_squeeze_ratio', 'fig3b_pct_3x3', 'table3_bypass')


# -- grids, names, experiment files ----------------------------------------------


def test_expand_names_points_by_overrides_and_seed():
  grid = [{'spec.squeeze_ratio': 0.125}, {'spec.squeeze_ratio': 0.5}]
  points = sweep.expand(grid, seeds=2, base_seed=3)
  assert [p.name for p in points] == [
      'squeeze_ratio=0.125,seed=3', 'squeeze_ratio=0.125,seed=4',
      'squeeze_ratio=0.5,seed=3', 'squeeze_ratio=0.5,seed=4']
  assert points[1].overrides == {'spec.squeeze_ratio': 0.125, 'seed': 4}
  assert sweep.expand(grid, 2, 3) == points  # deterministic
  # Ambiguous leaves keep their full key; odd characters never reach the file system.
  assert sweep.run_name({'spec.bypass': 'simple', 'lr': 0.1, 'x.lr': 1, 'seed': 0}) == (
      'bypass=simple,lr=0.1,x.lr=1,seed=0')
  assert sweep.run_name({'data_dir': '/a b/c', 'seed': 1}) == 'data_dir=_a_b_c,seed=1'
  long = sweep.run_name({f'k{i}': 'v' * 20 for i in range(10)} | {'seed': 0})
  assert len(long) <= 120 and long != sweep.run_name({f'k{i}': 'w' * 20 for i in range(10)})
  with pytest.raises(UserError, match='twice'):
    sweep.expand([{'lr': 0.1}, {'lr': 0.1}])
  with pytest.raises(UserError, match='--seeds=0'):
    sweep.expand(grid, seeds=0)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiment_files_load_every_preset(name):
  path = os.path.join(ROOT, 'experiments', f'{name}.py')
  for preset in ('quick', 'cpu', 'paper', 'test'):
    config = configs.load(f'{path}:{preset}')
    points = sweep.expand(sweep.load_grid(f'{path}:{preset}'), 1, config.seed)
    for point in points:
      sweep.point_config(config, point)  # every key exists
    assert len(points) >= 2
    declared = sweep.load_report(f'{path}:{preset}')
    assert json.loads(json.dumps(declared)) == declared  # it goes into sweep.json
    assert {f'spec.{declared["x"]}'} == set(points[0].overrides) - {'seed'}
  paper = configs.load(f'{path}:paper')
  fields = configs.spec_fields(paper)
  assert (paper.dataset, paper.model, fields['base_e'], fields['incr_e']) == (
      'imagenet2012', 'squeezenet1_0', 128, 128)
  assert (paper.lr, paper.schedule, paper.batch_size, paper.weight_decay,
          paper.total_steps, fields['conv10_relu']) == (0.04, 'linear', 512, 2e-4, 170_000, True)
  quick = configs.load(f'{path}:quick')
  assert quick.dataset == 'fashion_mnist' and configs.spec_fields(quick)['base_e'] <= 64


def test_grid_values_follow_the_paper():
  grid = sweep.load_grid(f'{FIG3A}:paper')
  assert [p['spec.squeeze_ratio'] for p in grid] == [0.125, 0.25, 0.5, 0.75, 1.0]
  fig3b = os.path.join(ROOT, 'experiments', 'fig3b_pct_3x3.py')
  assert configs.load(f'{fig3b}:paper').spec.squeeze_ratio == 0.5
  pct = [p['spec.pct_3x3'] for p in sweep.load_grid(f'{fig3b}:paper')]
  assert pct[0] == 0.01 and pct[-1] == 0.99 and 0.5 in pct
  with pytest.raises(UserError, match='unknown config key'):
    sweep.point_config(configs.load(f'{FIG3A}:test'), sweep.Point('x', {'spec.squeez_ratio': 1}))
  with pytest.raises(UserError, match='needs a get_sweep'):
    sweep.load_grid(os.path.join(ROOT, 'experiments', 'fashion_mnist.py') + ':test')


def test_device_slots_are_disjoint(monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5,6,7')
  assert sweep.device_slots(2, 2) == [((4, 5), ()), ((6, 7), ())]
  with pytest.raises(UserError, match='needs 6 GPUs'):
    sweep.device_slots(3, 2)
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
  assert sweep.device_slots(2, 1) == [((0,), ()), ((1,), ())]
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 5})
  assert sweep.device_slots(2) == [((), (0, 1)), ((), (2, 3))]
  # More jobs than cores: they share.
  assert sweep.device_slots(7)[4:] == [((), (5,)), ((), (0,)), ((), (1,))]


# -- real sweeps ------------------------------------------------------------------------


def write_experiment(directory, grid, extra='') -> str:
  """A sweep file in the repository's style: fig3a's `test` preset with this grid."""
  path = os.path.join(directory, 'exp.py')
  with open(path, 'w') as f:
    f.write(textwrap.dedent(f'''
        import os
        from squeezejax import configs, errors
        def get_config(arg):
          return configs.load_module({FIG3A!r}).get_config(arg)
        def get_sweep(arg):
          return {grid!r}
    ''') + textwrap.dedent(extra))
  return path


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('xla_cache'))


@pytest.fixture(scope='module')
def local_sweep(tmp_path_factory, cache_dir):
  """Two seeds of a real tiny run and of an invalid design point, local executor."""
  directory = str(tmp_path_factory.mktemp('local'))
  grid = [{'spec.squeeze_ratio': 0.125}, {'spec.squeeze_ratio': 0.0}]
  experiment = write_experiment(directory, grid)
  workdir = os.path.join(directory, 'sweep')
  logs = []
  records = sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, cache_dir=cache_dir,
                            log=logs.append)
  return experiment, workdir, records, logs


def lines(workdir):
  with open(os.path.join(workdir, results.RESULTS)) as f:
    return [json.loads(line) for line in f]


def rerun(experiment, workdir, cache_dir, **kwargs):
  logs = []
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, cache_dir=cache_dir,
                  log=logs.append, report=False, **kwargs)
  return logs


def test_local_sweep_records_failures_and_goes_on(local_sweep, cache_dir):
  _, workdir, records, logs = local_sweep
  assert [(r['name'], r['status']) for r in records] == [
      ('squeeze_ratio=0.125,seed=0', 'ok'), ('squeeze_ratio=0.125,seed=1', 'ok'),
      ('squeeze_ratio=0,seed=0', 'failed'), ('squeeze_ratio=0,seed=1', 'failed')]
  ok, failed = records[0], records[2]
  assert failed['error'].startswith('UserError: ') and 'squeeze_ratio' in failed['error']
  assert '\n' not in failed['error']
  assert failed['squeeze_ratio'] == 0.0 and failed['base_e'] == 16
  assert os.path.exists(os.path.join(workdir, failed['run_dir'], 'error.txt'))
  for key in ('squeeze_ratio', 'pct_3x3', 'bypass', 'base_e', 'incr_e', 'freq', 'seed',
              'params', 'size_mib', 'macs', 'top1', 'top5', 'wall_s', 'run_dir'):
    assert ok[key] is not None, key
  assert 0 <= ok['top1'] <= ok['top5'] <= 1
  assert (records[1]['seed'], records[1]['params']) == (1, ok['params'])
  with open(os.path.join(workdir, ok['run_dir'], 'result.json')) as f:
    assert json.load(f)['top1'] == ok['top1']
  assert [r['name'] for r in lines(workdir)] == [r['name'] for r in records]
  assert os.listdir(cache_dir)  # compiled executables went to the persistent cache
  assert os.path.exists(os.path.join(workdir, 'compile_ahead.log'))  # its helper ran
  for name in ('table.md', 'size_vs_accuracy.png'):  # one point, no declaration
    assert os.path.exists(os.path.join(workdir, name)), name
  assert results.read_sweep_info(workdir)['report'] is None


def test_rerun_after_kills_keeps_each_point_exactly_once(local_sweep, cache_dir, capfd):
  experiment, workdir, records, _ = local_sweep
  names = [r['name'] for r in records]
  path = os.path.join(workdir, results.RESULTS)
  # 1. Nothing to do.
  logs = rerun(experiment, workdir, cache_dir)
  assert '4 already done, 0 to run' in logs[0]
  # 2. Killed after the run wrote result.json, before its line: appended, not retrained.
  results.rewrite(path, [r for r in lines(workdir) if r['name'] != names[0]])
  metrics = os.path.join(workdir, names[0], 'metrics.jsonl')
  before = os.stat(metrics).st_mtime_ns
  logs = rerun(experiment, workdir, cache_dir)
  assert '4 already done, 0 to run' in logs[-2]
  assert os.stat(metrics).st_mtime_ns == before
  assert lines(workdir)[-1] == records[0]
  # 3. Killed while appending: the torn line is dropped, the rest kept.
  with open(path, 'ab') as f:
    f.write(b'{"name": "squeeze_ratio=0.125,se')
  rerun(experiment, workdir, cache_dir)
  assert sorted(r['name'] for r in lines(workdir)) == sorted(names)
  # 4. Killed during training (checkpoints, no result.json): the trainer resumes.
  run_dir = os.path.join(workdir, names[1])
  os.remove(os.path.join(run_dir, 'result.json'))
  results.rewrite(path, [r for r in lines(workdir) if r['name'] != names[1]])
  capfd.readouterr()
  logs = rerun(experiment, workdir, cache_dir)
  assert '1 to run' in logs[0]
  assert 'resumed from step 8' in capfd.readouterr().out
  assert os.path.exists(os.path.join(run_dir, 'result.json'))
  # 5. Failed points are retried only when asked, and still appear once.
  rerun(experiment, workdir, cache_dir, retry_failed=True)
  final = lines(workdir)
  assert sorted(r['name'] for r in final) == sorted(names)
  assert {r['name']: r['status'] for r in final}[names[2]] == 'failed'
  # 6. A different sweep cannot write into this workdir.
  with pytest.raises(UserError, match='use a new --workdir'):
    rerun(experiment, workdir, cache_dir, overrides={'total_steps': '4'})


def test_processes_executor_runs_submitit_jobs_side_by_side(tmp_path, cache_dir):
  """submitit LocalExecutor subprocesses, two at a time: one run, one invalid point."""
  grid = [{'spec.squeeze_ratio': 0.125}, {'spec.bypass': 'simple', 'spec.freq': 1}]
  experiment = write_experiment(str(tmp_path), grid)
  workdir = str(tmp_path / 'sweep')
  records = sweep.run_sweep(f'{experiment}:test', workdir, executor='processes',
                            parallel=2, timeout_min=5, cache_dir=cache_dir,
                            log=lambda _: None, report=False)
  assert [r['status'] for r in records] == ['ok', 'failed']
  assert records[0]['top1'] is not None
  assert records[1]['error'].startswith('UserError: ') and 'bypass' in records[1]['error']
  assert records[1]['bypass'] == 'simple' and records[1]['freq'] == 1
  assert os.path.exists(os.path.join(workdir, records[1]['run_dir'], 'error.txt'))
  assert len(lines(workdir)) == 2


def test_a_preempted_job_stops_the_sweep(tmp_path, capsys):
  """A job that reports 'preempted' (here: SIGTERM at once, while its submitit
  subprocess loads the config) stops the driver with exit 143 and no line; the other
  job is stopped too."""
  experiment = write_experiment(str(tmp_path), [{'lr': 0.1}, {'lr': 0.2}, {'lr': 0.3}], '''
      import signal, time
      _get_config = get_config
      def get_config(arg):
        if os.environ.get('SUBMITIT_EXECUTOR'):  # in the job, not in the driver
          os.kill(os.getpid(), signal.SIGTERM)
          time.sleep(30)  # the job's handler raises before this ends
        return _get_config(arg)
  ''')
  workdir = str(tmp_path / 'sweep')
  assert sweep.main([f'--config={experiment}:test', f'--workdir={workdir}',
                     '--executor=processes', '--parallel=2', '--no_report']) == 143
  assert 'rerun the same command to resume' in capsys.readouterr().err
  assert not os.path.exists(os.path.join(workdir, results.RESULTS))
  submitted = [n for n in os.listdir(os.path.join(workdir, 'submitit'))
               if n.endswith('_submitted.pkl')]
  assert len(submitted) == 2  # the third point never started


def fake_train(config, workdir):
  """The trainer's result.json dict for `config`, without training."""
  spec = configs.spec_from_config(config, num_classes=10, in_channels=1)
  result = {'config': config.to_dict(), 'spec': spec.to_dict(), **spec.cost(16),
            'steps': config.total_steps, 'final_train_loss': 2.0,
            'top1': 0.5 + spec.freq / 100, 'top5': 0.9,
            'train_img_s': 1.0, 'wall_s': 1.0}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, sweep.RESULT_JSON), 'w') as f:
    json.dump(result, f)
  return result


def test_preemption_in_process_stops_the_sweep(tmp_path, monkeypatch, capsys):
  """The trainer's Preempted, SIGTERM outside the trainer's loop, and SIGTERM to the
  driver between points: each stops the sweep (143) without a 'failed' line."""
  experiment = write_experiment(str(tmp_path), [{'spec.freq': 1}, {'spec.freq': 2}])
  argv = [f'--config={experiment}:test', f'--workdir={tmp_path / "sweep"}', '--no_report',
          '--compilation_cache=none']
  previous = signal.getsignal(signal.SIGTERM)

  def preempted(config, workdir):
    raise errors.Preempted(3)

  def sigterm(config, workdir):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises before this ends

  for trainer in (preempted, sigterm):
    monkeypatch.setattr(train, 'train_and_evaluate', trainer)
    assert sweep.main(argv) == 143
    assert 'freq=1,seed=0 was preempted' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'sweep' / results.RESULTS)
    assert signal.getsignal(signal.SIGTERM) == previous  # restored for whoever runs next
  # SIGTERM to the driver after the first point: its line is kept, the second waits.
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  with pytest.raises(sweep.SweepPreempted, match='SIGTERM'):
    sweep.run_sweep(f'{experiment}:test', tmp_path / 'sweep', report=False, cache_dir=None,
                    log=lambda line: 'top1' in line and os.kill(os.getpid(), signal.SIGTERM))
  assert [r['name'] for r in lines(tmp_path / 'sweep')] == ['freq=1,seed=0']
  assert signal.getsignal(signal.SIGTERM) == previous
  records = sweep.run_sweep(f'{experiment}:test', tmp_path / 'sweep', report=False,
                            cache_dir=None, log=lambda _: None)
  assert [r['status'] for r in records] == ['ok', 'ok']


def test_no_compile_ahead_starts_no_helper(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  experiment = write_experiment(str(tmp_path), [{'spec.freq': 1}, {'spec.freq': 2}])
  assert sweep.main([f'--config={experiment}:test', f'--workdir={tmp_path / "sweep"}',
                     '--no_report', '--no_compile_ahead']) == 0
  assert len(lines(tmp_path / 'sweep')) == 2
  assert not os.path.exists(tmp_path / 'sweep' / 'compile_ahead.log')


def test_cli(tmp_path):
  with pytest.raises(UserError, match='--executor'):
    sweep.main([f'--config={FIG3A}:test', f'--workdir={tmp_path}', '--executor=ssh'])
  with pytest.raises(UserError, match='unknown config key'):
    sweep.main([f'--config={FIG3A}:test', f'--workdir={tmp_path}', '--config.nope=1'])
  with pytest.raises(UserError, match='--no_compile_ahead is a local executor option'):
    sweep.main([f'--config={FIG3A}:test', f'--workdir={tmp_path}', '--executor=processes',
                '--no_compile_ahead'])


def test_cli_slurm_flags(tmp_path, monkeypatch):
  """Bad SLURM flag values and SLURM flags without SLURM: one line each, nothing run."""
  argv = [f'--config={FIG3A}:test', f'--workdir={tmp_path}']
  for flags, message in [
      (['--executor=slurm', '--cpus_per_task=-1'], '--cpus_per_task=-1: expected an integer >= 0'),
      (['--executor=slurm', '--tasks_per_node=0'], '--tasks_per_node=0: expected an integer >= 1'),
      (['--executor=slurm', '--max_attempts=0'], '--max_attempts=0: expected an integer >= 1'),
      (['--executor=slurm', '--sbatch=--Account'], "--sbatch='--Account': expected KEY=VALUE"),
      (['--executor=slurm', '--parallel=2'], 'use --array_parallelism'),
      (['--no_wait'], '--no_wait is a SLURM option: expected --executor=slurm'),
      (['--executor=processes', '--nodes=2'], '--nodes is a SLURM option'),
      (['--executor=slurm', '--nodes=2', '--gpus_per_node=8'],
       'runs one per GPU, expected --tasks_per_node=8')]:
    with pytest.raises(UserError, match=re.escape(message)):
      sweep.main(argv + flags)
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun here: not a SLURM machine
  with pytest.raises(UserError, match='--executor=slurm: .*srun'):
    sweep.main(argv + ['--executor=slurm', '--no_report'])
  assert not os.path.exists(tmp_path / results.JOBS_JSON)


def test_vmapped_seeds_write_a_line_per_seed(tmp_path, cache_dir):
  """--vmap_seeds: one run trains both seeds in one vmapped step; two result lines."""
  experiment = write_experiment(str(tmp_path), [{'spec.squeeze_ratio': 0.125}])
  workdir = str(tmp_path / 'sweep')
  records = sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, vmap_seeds=True,
                            cache_dir=cache_dir, log=lambda _: None, report=False)
  assert [(r['name'], r['seed'], r['status']) for r in records] == [
      ('squeeze_ratio=0.125,seed=0-1/0', 0, 'ok'), ('squeeze_ratio=0.125,seed=0-1/1', 1, 'ok')]
  assert records[0]['top1'] is not None and records[0]['final_train_loss'] != \
      records[1]['final_train_loss']
  assert sorted(os.listdir(workdir)).count('squeeze_ratio=0.125,seed=0-1') == 1
  logs = []
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, vmap_seeds=True,
                  cache_dir=cache_dir, log=logs.append, report=False)
  assert any('1 already done, 0 to run' in line for line in logs), logs
  assert len(lines(workdir)) == 2


# -- locks, changed configs, exit status ------------------------------------------------


def test_a_second_sweep_of_the_workdir_is_refused(tmp_path, monkeypatch):
  """While a sweep runs, `squeezejax sweep` on its workdir exits 2 naming it; the lock
  goes with its holder (here: a run that ends). Run directories lock the same way."""
  experiment = write_experiment(str(tmp_path), [{'spec.freq': 1}])
  workdir = str(tmp_path / 'sweep')
  seen = []

  def second_sweep(config, run_dir):
    out = subprocess.run(
        [sys.executable, '-m', 'squeezejax', 'sweep', f'--config={experiment}:test',
         f'--workdir={workdir}', '--no_report'], capture_output=True, text=True, timeout=120)
    seen.append(out)
    return fake_train(config, run_dir)

  monkeypatch.setattr(train, 'train_and_evaluate', second_sweep)
  records = sweep.run_sweep(f'{experiment}:test', workdir, report=False, cache_dir=None,
                            log=lambda _: None)
  assert [r['status'] for r in records] == ['ok']
  out, = seen
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == (
      f'squeezejax sweep: error: {workdir!r} is in use by squeezejax sweep (pid {os.getpid()} '
      f'on {socket.gethostname()}): wait for it to finish, or stop it')
  assert len(lines(workdir)) == 1
  run_dir = os.path.join(workdir, records[0]['run_dir'])
  with files.lock(run_dir, 'squeezejax train'):
    with pytest.raises(UserError, match='is in use by squeezejax train'):
      with files.lock(run_dir, 'squeezejax train'):
        pass
  with files.lock(run_dir, 'squeezejax train'):  # released
    pass


def test_a_changed_experiment_file_is_refused_then_rerun(tmp_path, monkeypatch):
  """Points that ran with another config are refused, saying what changed; with
  --rerun_changed their old runs move to WORKDIR/replaced/ and they run again, and a
  point no longer in the grid leaves the results with them."""
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  experiment = write_experiment(str(tmp_path), [{'spec.freq': 1}, {'spec.freq': 2}])
  workdir = str(tmp_path / 'sweep')
  run = lambda **kw: sweep.run_sweep(f'{experiment}:test', workdir, report=False,
                                     cache_dir=None, log=lambda _: None, **kw)
  run()
  with open(os.path.join(workdir, 'freq=1,seed=0', results.POINT_JSON)) as f:
    assert json.load(f)['config']['total_steps'] == 8
  run()  # unchanged: nothing to do, nothing refused
  point_json = os.path.join(workdir, 'freq=1,seed=0', results.POINT_JSON)
  with open(point_json) as f:
    point = json.load(f)
  del point['config']['seed_axis']  # a point that ran before the trainer had the field
  files.write_json(point_json, point)
  run()  # a field added since, at its default, is no change
  write_experiment(str(tmp_path), [{'spec.freq': 1}], '''
      _get_config = get_config
      def get_config(arg):
        c = _get_config(arg)
        c.total_steps = 4
        return c
  ''')
  before = open(os.path.join(workdir, results.RESULTS)).read()
  with pytest.raises(UserError) as e:
    run()
  assert str(e.value).startswith(f'2 point(s) ran with another config than {experiment}:test '
                                 'gives now (freq=1,seed=0: total_steps 8 -> 4): rerun them '
                                 'with --rerun_changed')
  assert open(os.path.join(workdir, results.RESULTS)).read() == before
  records = run(rerun_changed=True)
  assert [(r['name'], r['steps'], r['status']) for r in records] == [('freq=1,seed=0', 4, 'ok')]
  assert [r['name'] for r in lines(workdir)] == ['freq=1,seed=0']  # freq=2 went too
  replaced, = os.listdir(os.path.join(workdir, 'replaced'))
  old = os.path.join(workdir, 'replaced', replaced)
  assert sorted(os.listdir(old)) == ['freq=1,seed=0', 'freq=2,seed=0']
  with open(os.path.join(old, 'freq=1,seed=0', sweep.RESULT_JSON)) as f:
    assert json.load(f)['config']['total_steps'] == 8  # kept, not lost
  run()  # the new points are what the file gives now


def test_failed_points_exit_1_counting_them_last(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  experiment = write_experiment(str(tmp_path), [{'spec.freq': 1}, {'spec.squeeze_ratio': 0.0},
                                                {'spec.freq': 2}])
  argv = [f'--config={experiment}:test', f'--workdir={tmp_path / "sweep"}', '--no_report',
          '--compilation_cache=none']
  assert sweep.main(argv) == 1
  out = capsys.readouterr()
  assert out.err.splitlines()[-1].startswith(
      'squeezejax sweep: 1 of 3 points failed (first: squeeze_ratio=0,seed=0: UserError: ')
  assert sweep.main(argv) == 1  # still failed: a rerun says so again
  assert capsys.readouterr().err.splitlines()[-1].startswith('squeezejax sweep: 1 of 3 points')


def test_a_slurm_job_requeued_too_often_fails(tmp_path, monkeypatch):
  """The job side of --max_attempts, with SLURM's own variables: the attempt after
  max_attempts runs is refused before any work, as a failed outcome (the sweep goes on)."""
  for key, value in [('SUBMITIT_EXECUTOR', 'slurm'), ('SLURM_RESTART_COUNT', '2'),
                     ('SLURM_ARRAY_JOB_ID', '7'), ('SLURM_ARRAY_TASK_ID', '1')]:
    monkeypatch.setenv(key, value)
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  job = sweep.Job(f'{FIG3A}:test', {}, str(tmp_path / 'run'), max_attempts=2)
  outcome = job()
  assert (outcome.status, outcome.error) == ('failed', (
      'UserError: SLURM job 7_1 was requeued 2 times (preempted, timed out or its node '
      'failed): giving up after --max_attempts=2'))
  assert os.path.exists(tmp_path / 'run' / 'error.txt')
  assert dataclasses.replace(job, max_attempts=3)().status == 'ok'  # attempt 3 of 3 runs


def test_vmap_seeds_auto_runs_the_seeds_one_after_another_on_cpu(tmp_path):
  """--vmap_seeds alone is 'auto': on CPU the faster path, seeds one after another,
  and the sweep says so; 'on' keeps one step for all; a bad value is one line."""
  experiment = write_experiment(str(tmp_path), [{'spec.squeeze_ratio': 0.125}])
  workdir = str(tmp_path / 'sweep')
  logs = []
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, vmap_seeds='auto', status=True,
                  log=logs.append)
  assert any('on CPU the seeds run one after another' in line for line in logs), logs
  assert any('squeeze_ratio=0.125,seed=1' in line for line in logs), logs
  logs = []
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, vmap_seeds='on', status=True,
                  log=logs.append)
  assert any('squeeze_ratio=0.125,seed=0-1' in line for line in logs), logs
  assert not any('one after another' in line for line in logs), logs
  with pytest.raises(UserError, match=r"--vmap_seeds=maybe: expected one of auto, on, off"):
    sweep.run_sweep(f'{experiment}:test', workdir, seeds=2, vmap_seeds='maybe', status=True)
  assert sweep.main(['--config', f'{experiment}:test', '--workdir', workdir, '--seeds=2',
                     '--vmap_seeds', '--status']) == 0
