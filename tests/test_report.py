"""The report: figures and tables from a results.jsonl written the way sweeps write it,
drawn as the experiment file's declaration (in sweep.json) says."""

import json
import os
import random
import textwrap

import matplotlib.image
import pytest

from squeezejax import configs
from squeezejax import files
from squeezejax import report
from squeezejax import results
from squeezejax import spec as spec_lib
from squeezejax import sweep
from squeezejax import train
from squeezejax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG3A = os.path.join(ROOT, 'experiments', 'fig3a_squeeze_ratio.py')


def write_results(workdir, key, values, seeds=1, base=None, failed=(), experiment=None,
                  top1=None):
  """Records built as the sweep builds them, from specs' real costs and made-up accuracies
  (`top1(value, seed)`, else random); with `experiment`, its report declaration in
  sweep.json as the sweep writes it."""
  base = base or dict(squeeze_ratio=0.125, pct_3x3=0.5, bypass='none')
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, results.RESULTS)
  rnd = random.Random(0)
  for value in values:
    for seed in range(seeds):
      spec = spec_lib.SqueezeNetSpec(layout='small', base_e=32, incr_e=32, num_classes=10,
                                     in_channels=1, **{**base, key: value})
      overrides = {f'spec.{key}': value, 'seed': seed}
      result = {'spec': spec.to_dict(), 'config': {'dataset': 'fashion_mnist'},
                **spec.cost(28), 'steps': 300, 'final_train_loss': 0.4,
                'top1': top1(value, seed) if top1 else 0.85 + rnd.uniform(0, 0.02),
                'top5': 0.99 + rnd.uniform(0, 0.009),
                'train_img_s': 900.0, 'wall_s': 90.0}
      name = sweep.run_name(overrides)
      results.append(path, results.ok_record(name, name, overrides, result))
  for value in failed:
    overrides = {f'spec.{key}': value, 'seed': 0}
    results.append(path, results.failed_record(
        sweep.run_name(overrides), overrides, None, f'UserError: {key}={value!r} is not allowed'))
  if experiment:
    declared = sweep.load_report(os.path.join(ROOT, 'experiments', f'{experiment}.py'))
    files.write_json(os.path.join(workdir, results.SWEEP_JSON), {'report': declared})
  return path


def check_png(path):
  image = matplotlib.image.imread(path)
  assert image.shape[0] > 300 and image.shape[1] > 300


def test_squeeze_ratio_sweep_gives_figure_3a_table_and_edf(tmp_path):
  write_results(tmp_path, 'squeeze_ratio', [0.125, 0.25, 0.5, 0.75, 1.0], seeds=2, failed=[0],
                experiment='fig3a_squeeze_ratio')
  written = report.make_report(str(tmp_path), edf_min_runs=10)
  names = sorted(os.path.basename(p) for p in written)
  assert names == ['error_edf.png', 'fig3a_squeeze_ratio.png', 'table.md']
  for path in written:
    if path.endswith('.png'):
      check_png(path)
  table = (tmp_path / 'table.md').read_text()
  rows = [line for line in table.splitlines() if line.startswith('| 0') or line.startswith('| 1')]
  assert [row.split('|')[1].strip() for row in rows] == ['0.125', '0.25', '0.5', '0.75', '1']
  sr_0125 = rows[0].split('|')
  assert sr_0125[2].strip() == '2'  # seeds
  assert '±' in sr_0125[6]  # top-1 mean ± std over the two seeds
  assert sr_0125[-4:-1] == [' 57.5 ', ' 80.3 ', ' 4.8 ']  # the paper's SqueezeNet
  assert '86.0' in rows[3] and '19' in rows[3]  # the paper's plateau at SR 0.75
  assert 'Iandola et al. 2016' in table and 'compare shapes, not levels' in table
  assert 'Failed points (1)' in table and 'squeeze_ratio=0,seed=0' in table


def test_pct_3x3_and_bypass_sweeps_draw_their_declared_figures(tmp_path):
  write_results(tmp_path / 'b', 'pct_3x3', [0.01, 0.5, 0.99],
                base=dict(squeeze_ratio=0.5, bypass='none'), experiment='fig3b_pct_3x3')
  written = report.make_report(str(tmp_path / 'b'))
  assert sorted(os.path.basename(p) for p in written) == ['fig3b_pct_3x3.png', 'table.md']
  assert '85.6' in (tmp_path / 'b' / 'table.md').read_text()

  write_results(tmp_path / 'c', 'bypass', ['none', 'simple', 'complex'], seeds=2,
                experiment='table3_bypass')
  written = report.make_report(str(tmp_path / 'c'))
  assert sorted(os.path.basename(p) for p in written) == ['table.md', 'table3_bypass.png']
  check_png(written[-1])
  table = (tmp_path / 'c' / 'table.md').read_text()
  simple = next(line for line in table.splitlines() if line.startswith('| simple'))
  assert '60.4' in simple and '82.5' in simple
  # simple bypass adds no parameters; complex bypass adds 1x1 convs
  sizes = {line.split('|')[1].strip(): line.split('|')[4].strip()
           for line in table.splitlines() if line.startswith('| ') and 'MiB' not in line}
  assert sizes['none'] == sizes['simple'] != sizes['complex']


def test_without_a_declaration_the_figure_is_generic(tmp_path):
  path = write_results(tmp_path, 'squeeze_ratio', [0.25, 0.5])
  write_results(tmp_path, 'pct_3x3', [0.25], base=dict(squeeze_ratio=0.25, bypass='none'))
  records = results.read(path)
  assert report.varying(records) == ['pct_3x3', 'squeeze_ratio']
  written = report.make_report(str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == ['size_vs_accuracy.png', 'table.md']
  assert 'paper' not in (tmp_path / 'table.md').read_text()


def test_report_cli(tmp_path, capsys):
  with pytest.raises(UserError, match='no results.jsonl'):
    report.main([f'--workdir={tmp_path}'])
  write_results(tmp_path, 'squeeze_ratio', [0.125, 0.75], experiment='fig3a_squeeze_ratio')
  assert report.main([f'--workdir={tmp_path}']) == 0
  out = capsys.readouterr().out
  assert 'fig3a_squeeze_ratio.png' in out
  # The findings are printed too; one seed gives no interval, so no verdict.
  assert '## Findings' in out and 'none (one run a side)' in out
  assert 'not tested: no finished runs with SR 1' in out


def test_a_sweep_in_the_reference_setting_shares_its_axes(tmp_path):
  path = write_results(tmp_path, 'squeeze_ratio', [0.125, 0.75],
                       experiment='fig3a_squeeze_ratio')
  records = results.read(path)
  for r in records:  # as an ImageNet v1.0 sweep would record them
    r.update(dataset='imagenet2012', layout='v1.0', num_classes=1000)
  results.rewrite(path, records)
  (figure,) = [p for p in report.make_report(str(tmp_path)) if p.endswith('.png')]
  check_png(figure)
  assert report.metrics(records) == ('top1', 'top5')  # 1000 classes: top-5 is drawn too
  table = (tmp_path / 'table.md').read_text()
  assert 'compare shapes' not in table and 'Top-5 is not drawn' not in table


FREQ_EXPERIMENT = '''
from squeezejax import configs
def get_config(arg):
  return configs.load_module({fig3a!r}).get_config(arg)
def get_sweep(arg):
  return [{{'spec.freq': 1}}, {{'spec.freq': 2}}, {{'spec.freq': 4}}]
def get_report(arg):
  return {{'x': 'freq', 'figure': 'fig_freq.png', 'title': 'expansion every freq modules',
          'caption': 'a made-up reference',
          'reference': {{'label': 'notes', 'source': 'Lab notes 2024, p. 3',
                        'setting': {{'dataset': 'imagenet2012'}},
                        'points': [{{'value': 2, 'top1': 0.61, 'top5': None,
                                    'size_mib': 0.1, 'stated_mb': 0.5}}]}}}}
'''


def test_a_new_sweep_needs_no_report_code(tmp_path, monkeypatch):
  """A sweep over freq declared in its experiment file: the sweep copies the declaration
  into sweep.json and the report draws it, also after the file has changed."""
  def fake_train(config, workdir):
    spec = configs.spec_from_config(config, num_classes=10, in_channels=1)
    return {'config': config.to_dict(), 'spec': spec.to_dict(), **spec.cost(16), 'steps': 8,
            'top1': 0.5 + spec.freq / 100, 'top5': 0.9, 'wall_s': 1.0}

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  experiment = tmp_path / 'freq.py'
  experiment.write_text(textwrap.dedent(FREQ_EXPERIMENT.format(fig3a=FIG3A)))
  workdir = str(tmp_path / 'sweep')
  sweep.run_sweep(f'{experiment}:test', workdir, cache_dir=None, log=lambda _: None)
  assert results.read_sweep_info(workdir)['report']['x'] == 'freq'
  experiment.write_text(FREQ_EXPERIMENT.split('def get_report')[0].format(fig3a=FIG3A))
  written = report.make_report(workdir)
  assert sorted(os.path.basename(p) for p in written) == ['fig_freq.png', 'table.md']
  check_png(written[-1])
  table = (tmp_path / 'sweep' / 'table.md').read_text()
  rows = {line.split('|')[1].strip(): line for line in table.splitlines()
          if line.startswith('| ') and 'seeds' not in line}
  assert list(rows) == ['1', '2', '4'] and '| notes top-1 (%) |' in table
  assert rows['2'].rstrip(' |').endswith('61.0 |  | 0.5') and 'Lab notes 2024' in table
  # The same results without the declaration: the generic figure over what varies.
  os.remove(os.path.join(workdir, results.SWEEP_JSON))
  written = report.make_report(workdir)
  assert sorted(os.path.basename(p) for p in written) == ['size_vs_accuracy.png', 'table.md']


def _findings(workdir):
  table = (workdir / 'table.md').read_text()
  rows = [line.split('|') for line in table[table.index('## Findings'):].splitlines()
          if line.startswith('| ') and 'verdict' not in line]
  return {row[1].strip(): (row[3].strip(), row[5].strip(), row[6].strip()) for row in rows}


def test_findings_test_the_papers_claims_on_the_results(tmp_path):
  """Table 3 with constructed accuracies: seeds move every point together by up to 3
  points; simple bypass adds 1 point to every seed (a paired effect that must be
  found), complex adds nothing but noise of 1.5 points (an effect that must not be)."""
  seed_effect = [0.0, 0.03, -0.02]
  noise = [0.015, -0.012, 0.004]
  gain = {'none': lambda s: 0.0, 'simple': lambda s: 0.01, 'complex': lambda s: noise[s]}
  write_results(tmp_path, 'bypass', ['none', 'simple', 'complex'], seeds=3,
                experiment='table3_bypass',
                top1=lambda bypass, s: 0.85 + seed_effect[s] + gain[bypass](s))
  report.make_report(str(tmp_path))
  found = _findings(tmp_path)
  assert found['simple bypass beats none'] == ('+1.00', '3 seeds, paired', '**supported**')
  effect, n, verdict = found['complex bypass beats none']
  assert effect == '+0.23' and verdict == '**inconclusive at 3 seeds**'
  # simple - complex: +0.77 points but -0.5 to +2.2 by seed: undecided at 3 seeds
  assert found['simple bypass is at least as good as complex'][2].startswith('**inconc')
  table = (tmp_path / 'table.md').read_text()
  assert 'Student t interval' in table and 'top-5 is not drawn' in table.lower()
  # With seeds that do not match, the same numbers are compared unpaired (Welch):
  # the seed-to-seed spread now hides the 1-point gain.
  records = results.read(str(tmp_path / results.RESULTS))
  for r in records:
    if r['bypass'] == 'simple':
      r['seed'] += 10
  results.rewrite(str(tmp_path / results.RESULTS), records)
  report.make_report(str(tmp_path))
  effect, n, verdict = _findings(tmp_path)['simple bypass beats none']
  assert (effect, n) == ('+1.00', '3 + 3 runs, unpaired') and verdict.startswith('**inconc')


def write_design_space(workdir, gain):
  """design_space_bypass.py:quick's 2 x 40 sampled models as the sweep would record
  them (real costs), with made-up accuracies: a model's own level plus `gain(model)`."""
  experiment = os.path.join(ROOT, 'experiments', 'design_space_bypass.py')
  module = configs.load_module(experiment)
  base = configs.spec_fields(module.get_config('quick'))
  rnd = random.Random(1)
  path = os.path.join(workdir, results.RESULTS)
  for k, overrides in enumerate(module.get_sweep('quick')):
    fields = {**base, **{key.split('.')[-1]: v for key, v in overrides.items()},
              'num_classes': 10, 'in_channels': 1}
    spec = spec_lib.SqueezeNetSpec(**fields)
    level = 0.80 + 0.08 * spec.squeeze_ratio + rnd.gauss(0, 0.002)
    top1 = level + (gain(k // 2) if spec.bypass == 'simple' else 0.0)
    result = {'spec': spec.to_dict(), 'config': {'dataset': 'fashion_mnist'}, **spec.cost(28),
              'steps': 300, 'top1': top1, 'top5': 0.99, 'wall_s': 20.0}
    name = sweep.run_name({**overrides, 'seed': 0})
    results.append(path, results.ok_record(name, name, {**overrides, 'seed': 0}, result))
  files.write_json(os.path.join(workdir, results.SWEEP_JSON),
                   {'report': sweep.load_report(f'{experiment}:quick')})


def test_a_sampled_design_space_is_compared_by_its_error_distributions(tmp_path):
  write_design_space(tmp_path, gain=lambda model: 0.01 + random.Random(model).gauss(0, 0.003))
  written = report.make_report(str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == ['design_space_bypass.png', 'table.md']
  check_png(written[-1])
  effect, n, verdict = _findings(tmp_path)['simple bypass beats none (over the sampled design '
                                           'space)']
  assert n == '40 models, paired' and verdict == '**supported**'
  assert 0.8 < float(effect) < 1.2
  (tmp_path / 'same').mkdir()
  write_design_space(tmp_path / 'same', gain=lambda model: random.Random(model).gauss(0, 0.003))
  report.make_report(str(tmp_path / 'same'))
  effect, n, verdict = _findings(tmp_path / 'same')['simple bypass beats none (over the '
                                                    'sampled design space)']
  assert abs(float(effect)) < 0.2 and verdict == '**not supported**'


def test_a_rerun_of_a_finished_sweep_redraws_identical_figures_and_findings(tmp_path,
                                                                           monkeypatch):
  """A finished sweep run again trains nothing and rewrites byte-identical files."""
  trained = []

  def fake_train(config, workdir):
    trained.append(workdir)
    spec = configs.spec_from_config(config, num_classes=10, in_channels=1)
    seed_effect = (0.0, 0.02, -0.01)[config.seed]
    return {'config': config.to_dict(), 'spec': spec.to_dict(), **spec.cost(16), 'steps': 8,
            'top1': 0.8 + seed_effect + (spec.bypass == 'simple') * 0.01, 'top5': 0.99,
            'wall_s': 1.0}

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  experiment = os.path.join(ROOT, 'experiments', 'table3_bypass.py')
  workdir = str(tmp_path / 'sweep')
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=3, cache_dir=None, log=lambda _: None)
  assert len(trained) == 6
  names = sorted(os.listdir(workdir))
  first = {n: open(os.path.join(workdir, n), 'rb').read() for n in names
           if n.endswith(('.png', '.md'))}
  assert set(first) == {'table.md', 'table3_bypass.png'}
  assert b'| simple bypass beats none | bypass simple vs bypass none | +1.00 |' in first[
      'table.md']
  sweep.run_sweep(f'{experiment}:test', workdir, seeds=3, cache_dir=None, log=lambda _: None)
  assert len(trained) == 6  # nothing trained again
  assert {n: open(os.path.join(workdir, n), 'rb').read() for n in first} == first


def test_confusion_figure(tmp_path):
  result = {'confusion_matrix': [[5, 1, 0], [2, 3, 1], [0, 0, 6]], 'accuracy': 14 / 18,
            'class_names': ['cat', 'dog', 'bird']}
  path = report.confusion_figure(result, str(tmp_path / 'confusion.png'))
  assert matplotlib.image.imread(path).shape[0] > 100


def test_a_bad_claim_is_one_clear_error(tmp_path):
  write_results(tmp_path, 'bypass', ['none', 'simple'], experiment='table3_bypass')
  info = results.read_sweep_info(str(tmp_path))
  info['report']['claims'][0]['test'] = 'bigger'
  files.write_json(str(tmp_path / results.SWEEP_JSON), info)
  with pytest.raises(UserError, match="test='bigger' is not allowed: expected one of greater"):
    report.make_report(str(tmp_path))
  assert not (tmp_path / 'table.md').exists()  # nothing half-written
  with pytest.raises(UserError, match="test='bigger'"):  # a sweep refuses it before training
    results.write_sweep_info(str(tmp_path / 'new'), 'x.py:quick', {}, info['report'])


def test_the_design_space_experiment_loads_every_preset():
  experiment = os.path.join(ROOT, 'experiments', 'design_space_bypass.py')
  for preset, models, steps in (('quick', 40, 150), ('cpu', 100, 1000), ('test', 3, 8)):
    config = configs.load(f'{experiment}:{preset}')
    points = sweep.expand(sweep.load_grid(f'{experiment}:{preset}'), 1, config.seed)
    assert len(points) == 2 * models and config.total_steps == steps
    for point in points:
      sweep.point_config(config, point)  # every key exists
    declared = sweep.load_report(f'{experiment}:{preset}')
    assert json.loads(json.dumps(declared)) == declared  # it goes into sweep.json
  assert sweep.load_grid(f'{experiment}:quick') == sweep.load_grid(f'{experiment}:quick')
