"""Sweeps: grid expansion, run names, the results file under kills, executors (real runs).

Real trainings use the trainer's tiny `test` preset (synthetic data, 8 steps): two
seeds of one point in-process, shared by the resume tests (module fixture), and one
submitit job. All have the same shapes, so the persistent compilation cache makes
every run after the first skip XLA compilation.
"""

import json
import os
import signal
import time
import textwrap

import pytest

from squeezejax import configs
from squeezejax import sweep
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
    sweep.check_points(f'{path}:{preset}', {}, points)  # every key exists
    assert len(points) >= 2
  paper = configs.load(f'{path}:paper')
  assert (paper.dataset, paper.model, paper.spec.base_e, paper.spec.incr_e) == (
      'imagenet2012', 'squeezenet1_0', 128, 128)
  assert (paper.lr, paper.schedule, paper.batch_size, paper.weight_decay,
          paper.total_steps, paper.spec.conv10_relu) == (0.04, 'linear', 512, 2e-4, 170_000, True)
  quick = configs.load(f'{path}:quick')
  assert quick.dataset == 'fashion_mnist' and quick.spec.base_e <= 64


def test_grid_values_follow_the_paper():
  grid = sweep.load_grid(f'{FIG3A}:paper')
  assert [p['spec.squeeze_ratio'] for p in grid] == [0.125, 0.25, 0.5, 0.75, 1.0]
  fig3b = os.path.join(ROOT, 'experiments', 'fig3b_pct_3x3.py')
  assert configs.load(f'{fig3b}:paper').spec.squeeze_ratio == 0.5
  pct = [p['spec.pct_3x3'] for p in sweep.load_grid(f'{fig3b}:paper')]
  assert pct[0] == 0.01 and pct[-1] == 0.99 and 0.5 in pct
  with pytest.raises(UserError, match='unknown config key'):
    sweep.check_points(f'{FIG3A}:test', {}, [sweep.Point('x', {'spec.squeez_ratio': 1})])
  with pytest.raises(UserError, match='no get_sweep'):
    sweep.load_grid(os.path.join(ROOT, 'experiments', 'fashion_mnist.py') + ':test')


# -- the results file ----------------------------------------------------------------


def test_results_file_dedups_and_repairs_torn_lines(tmp_path):
  path = str(tmp_path / 'results.jsonl')
  sweep.append_result(path, {'name': 'a', 'status': 'failed'})
  sweep.append_result(path, {'name': 'b', 'status': 'ok'})
  sweep.append_result(path, {'name': 'a', 'status': 'ok'})  # a retried point: last wins
  with open(path, 'ab') as f:
    f.write(b'{"name": "c", "sta')  # killed in the middle of a write
  records = sweep.read_results(path)
  assert [(r['name'], r['status']) for r in records] == [('b', 'ok'), ('a', 'ok')]
  assert sweep.repair_results(path) == records
  sweep.append_result(path, {'name': 'c', 'status': 'ok'})
  lines = open(path).read().splitlines()
  assert [json.loads(line)['name'] for line in lines] == ['b', 'a', 'c']


# -- real sweeps ------------------------------------------------------------------------


def write_experiment(directory, grid) -> str:
  """A sweep file in the repository's style: fig3a's `test` preset with this grid."""
  path = os.path.join(directory, 'exp.py')
  with open(path, 'w') as f:
    f.write(textwrap.dedent(f'''
        from squeezejax import configs
        def get_config(arg):
          return configs.load_module({FIG3A!r}).get_config(arg)
        def get_sweep(arg):
          return {grid!r}
    '''))
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
  with open(os.path.join(workdir, sweep.RESULTS)) as f:
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
  assert 'squeeze_ratio' in failed['error'] and '\n' not in failed['error']
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
  for name in ('table.md', 'size_vs_accuracy.png'):  # one point: nothing varies
    assert os.path.exists(os.path.join(workdir, name)), name


def test_rerun_after_kills_keeps_each_point_exactly_once(local_sweep, cache_dir, capfd):
  experiment, workdir, records, _ = local_sweep
  names = [r['name'] for r in records]
  path = os.path.join(workdir, sweep.RESULTS)
  # 1. Nothing to do.
  logs = rerun(experiment, workdir, cache_dir)
  assert '4 already done, 0 to run' in logs[0]
  # 2. Killed after the run wrote result.json, before its line: appended, not retrained.
  sweep.rewrite_results(path, [r for r in lines(workdir) if r['name'] != names[0]])
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
  sweep.rewrite_results(path, [r for r in lines(workdir) if r['name'] != names[1]])
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


def test_submitit_local_executor(tmp_path, cache_dir):
  """Real submitit jobs (LocalExecutor subprocesses): one run, one invalid point."""
  grid = [{'spec.squeeze_ratio': 0.125}, {'spec.bypass': 'simple', 'spec.freq': 1}]
  experiment = write_experiment(str(tmp_path), grid)
  workdir = str(tmp_path / 'sweep')
  records = sweep.run_sweep(f'{experiment}:test', workdir, executor='submitit',
                            cluster='local', parallel=2, timeout_min=5, cache_dir=cache_dir,
                            log=lambda _: None, report=False)
  assert [r['status'] for r in records] == ['ok', 'failed']
  assert records[0]['top1'] is not None
  assert 'bypass' in records[1]['error'] and 'SpecError' in records[1]['error']
  assert len(lines(workdir)) == 2


def test_processes_executor_records_a_failing_subprocess(tmp_path, cache_dir):
  """`python -m squeezejax train` subprocesses; a bad point's one-line error comes back."""
  experiment = write_experiment(str(tmp_path), [{'spec.squeeze_ratio': 0.0}])
  workdir = str(tmp_path / 'sweep')
  launch = sweep.Launch(experiment + ':test', {'total_steps': '4'}, workdir, cache_dir)
  point = sweep.Point('p', {'spec.squeeze_ratio': 0.0, 'seed': 0})
  command = sweep.train_command(launch, point)
  assert command[-3:] == ['--config.total_steps=4', '--config.spec.squeeze_ratio=0.0',
                          '--config.seed=0']
  records = sweep.run_sweep(f'{experiment}:test', workdir, executor='processes', parallel=1,
                            cache_dir=cache_dir, log=lambda _: None, report=False)
  assert records[0]['status'] == 'failed'
  assert 'squeeze_ratio=0.0' in records[0]['error'], records[0]['error']


def test_cli(tmp_path):
  with pytest.raises(UserError, match='--executor'):
    sweep.main([f'--config={FIG3A}:test', f'--workdir={tmp_path}', '--executor=ssh'])
  with pytest.raises(UserError, match='unknown config key'):
    sweep.main([f'--config={FIG3A}:test', f'--workdir={tmp_path}', '--config.nope=1'])


def test_sigterm_stops_the_sweep_instead_of_failing_a_point(tmp_path):
  """A preempted driver stops (exit 143, no 'failed' line); a rerun resumes the point."""
  previous = signal.getsignal(signal.SIGTERM)
  with pytest.raises(sweep.SweepPreempted):
    with sweep._stop_on_sigterm():
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # the handler raises before this ends
  assert signal.getsignal(signal.SIGTERM) == previous  # restored for whoever runs next

  class Preempted(Exception):  # what the trainer raises on SIGTERM, by name
    pass
  assert sweep._is_preemption(Preempted('preempted at step 3'))
  assert not sweep._is_preemption(ValueError('squeeze_ratio=0'))


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
