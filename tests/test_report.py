"""The report: figures and tables from a results.jsonl written the way sweeps write it,
drawn as the experiment file's declaration (in sweep.json) says."""

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


def write_results(workdir, key, values, seeds=1, base=None, failed=(), experiment=None):
  """Records built as the sweep builds them, from specs' real costs and made-up accuracies;
  with `experiment`, its report declaration in sweep.json as the sweep writes it."""
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
                'top1': 0.85 + rnd.uniform(0, 0.02), 'top5': 0.99 + rnd.uniform(0, 0.009),
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
  write_results(tmp_path, 'squeeze_ratio', [0.125, 0.5], experiment='fig3a_squeeze_ratio')
  assert report.main([f'--workdir={tmp_path}']) == 0
  assert 'fig3a_squeeze_ratio.png' in capsys.readouterr().out


def test_a_sweep_in_the_reference_setting_shares_its_axes(tmp_path):
  path = write_results(tmp_path, 'squeeze_ratio', [0.125, 0.75],
                       experiment='fig3a_squeeze_ratio')
  records = results.read(path)
  for r in records:  # as an ImageNet v1.0 sweep would record them
    r.update(dataset='imagenet2012', layout='v1.0')
  results.rewrite(path, records)
  (figure,) = [p for p in report.make_report(str(tmp_path)) if p.endswith('.png')]
  height, width = matplotlib.image.imread(figure).shape[:2]
  assert width < height  # one column: sweep and paper share the axes
  assert 'compare shapes' not in (tmp_path / 'table.md').read_text()


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


def test_confusion_figure(tmp_path):
  result = {'confusion_matrix': [[5, 1, 0], [2, 3, 1], [0, 0, 6]], 'accuracy': 14 / 18,
            'class_names': ['cat', 'dog', 'bird']}
  path = report.confusion_figure(result, str(tmp_path / 'confusion.png'))
  assert matplotlib.image.imread(path).shape[0] > 100
