"""The report: figures and tables from a results.jsonl written here, the way sweeps write it."""

import os
import random

import matplotlib.image
import pytest

from squeezejax import report
from squeezejax import spec as spec_lib
from squeezejax import sweep
from squeezejax.errors import UserError


def write_results(workdir, key, values, seeds=1, base=None, failed=()):
  """Records built as the sweep builds them, from specs' real costs and made-up accuracies."""
  base = base or dict(squeeze_ratio=0.125, pct_3x3=0.5, bypass='none')
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, sweep.RESULTS)
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
      point = sweep.Point(sweep.run_name(overrides), overrides)
      sweep.append_result(path, sweep.ok_record(point, result))
  for value in failed:
    overrides = {f'spec.{key}': value, 'seed': 0}
    point = sweep.Point(sweep.run_name(overrides), overrides)
    sweep.append_result(path, sweep.failed_record(
        point, None, f'SpecError: {key}={value!r} is not allowed'))
  return path


def check_png(path):
  image = matplotlib.image.imread(path)
  assert image.shape[0] > 300 and image.shape[1] > 300


def test_squeeze_ratio_sweep_gives_figure_3a_table_and_edf(tmp_path):
  write_results(tmp_path, 'squeeze_ratio', [0.125, 0.25, 0.5, 0.75, 1.0], seeds=2, failed=[0])
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
  assert 'Failed points (1)' in table and 'squeeze_ratio=0,seed=0' in table


def test_pct_3x3_and_bypass_sweeps_pick_their_figures(tmp_path):
  write_results(tmp_path / 'b', 'pct_3x3', [0.01, 0.5, 0.99],
                base=dict(squeeze_ratio=0.5, bypass='none'))
  written = report.make_report(str(tmp_path / 'b'))
  assert sorted(os.path.basename(p) for p in written) == ['fig3b_pct_3x3.png', 'table.md']
  assert '85.6' in (tmp_path / 'b' / 'table.md').read_text()

  write_results(tmp_path / 'c', 'bypass', ['none', 'simple', 'complex'], seeds=2)
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


def test_two_varying_metaparameters_give_a_generic_figure(tmp_path):
  path = write_results(tmp_path, 'squeeze_ratio', [0.25, 0.5])
  write_results(tmp_path, 'pct_3x3', [0.25], base=dict(squeeze_ratio=0.25, bypass='none'))
  records = sweep.read_results(path)
  assert report.varying(records) == ['pct_3x3', 'squeeze_ratio']
  written = report.make_report(str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == ['size_vs_accuracy.png', 'table.md']


def test_report_cli(tmp_path, capsys):
  with pytest.raises(UserError, match='no results.jsonl'):
    report.main([f'--workdir={tmp_path}'])
  write_results(tmp_path, 'squeeze_ratio', [0.125, 0.5])
  assert report.main([f'--workdir={tmp_path}']) == 0
  assert 'fig3a_squeeze_ratio.png' in capsys.readouterr().out


def test_imagenet_sweep_overlays_the_paper_on_the_same_axes(tmp_path):
  path = write_results(tmp_path, 'squeeze_ratio', [0.125, 0.75])
  records = sweep.read_results(path)
  for r in records:  # as an ImageNet v1.0 sweep would record them
    r.update(dataset='imagenet2012', layout='v1.0')
  sweep.rewrite_results(path, records)
  (figure,) = [p for p in report.make_report(str(tmp_path)) if p.endswith('.png')]
  height, width = matplotlib.image.imread(figure).shape[:2]
  assert width < height  # one column: sweep and paper share the axes
