r"""`squeezejax report --workdir=DIR`: figures and tables from a sweep's results.jsonl.

What is drawn follows from which metaparameters vary across the finished runs:
  squeeze_ratio    -> fig3a_squeeze_ratio.png  (the paper's Figure 3(a))
  pct_3x3          -> fig3b_pct_3x3.png        (Figure 3(b))
  bypass           -> table3_bypass.png        (Table 3)
  anything else    -> size_vs_accuracy.png
Each figure plots model size (float32 MiB) against top-1 and top-5 accuracy, the
mean over seeds with the min-max spread, every point labelled with its value;
the paper's reported ImageNet numbers are drawn beside it as a separate,
labelled reference (on the same axes when the sweep itself ran on ImageNet).
`table.md` lists every point with the paper's numbers side by side, and with
many runs `error_edf.png` shows the empirical distribution of top-1 error
(pycls: compare design spaces by their error distributions, not by one run).
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import numpy as np

from squeezejax import flags
from squeezejax import spec as spec_lib
from squeezejax import sweep as sweep_lib
from squeezejax.errors import UserError

# Metaparameters the report knows how to draw, in order of preference.
DRAWN = ('squeeze_ratio', 'pct_3x3', 'bypass')  # with the paper's numbers beside them
FIGURE_NAMES = {'squeeze_ratio': 'fig3a_squeeze_ratio', 'pct_3x3': 'fig3b_pct_3x3',
                'bypass': 'table3_bypass'}
SHORT = {'squeeze_ratio': 'SR', 'pct_3x3': '3x3', 'bypass': '', 'base_e': 'base_e',
         'incr_e': 'incr_e', 'freq': 'freq', 'layout': ''}
EDF_MIN_RUNS = 10


# -- the paper's reported numbers (ImageNet, layout v1.0; DESIGN.md section 3) ---------

def _paper_size(**metaparameters) -> float:
  """Float32 MiB of a v1.0 design point, computed (the paper labels it rounded up)."""
  return spec_lib.SqueezeNetSpec(layout='v1.0', **metaparameters).cost()['size_mib']


def paper_points(key: str) -> list[dict[str, Any]]:
  """The paper's reported points for the metaparameter a sweep varies (top-1/top-5 or None).

  Only numbers the paper states; the figures' other points exist only as plot
  marks and are not reproduced.
  """
  if key == 'squeeze_ratio':
    return [  # SR 0.125 is SqueezeNet (Table 3 vanilla); SR 0.5 is Figure 3(b)'s 50% point.
        dict(value=0.125, top1=0.575, top5=0.803, size_mib=_paper_size(squeeze_ratio=0.125),
             label_mb=4.8),
        dict(value=0.5, top1=None, top5=0.856, size_mib=_paper_size(squeeze_ratio=0.5),
             label_mb=13.0),
        dict(value=0.75, top1=None, top5=0.860, size_mib=_paper_size(squeeze_ratio=0.75),
             label_mb=19.0)]
  if key == 'pct_3x3':
    return [dict(value=0.5, top1=None, top5=0.856,
                 size_mib=_paper_size(squeeze_ratio=0.5, pct_3x3=0.5), label_mb=13.0)]
  if key == 'bypass':
    return [dict(value='none', top1=0.575, top5=0.803, size_mib=4.8, label_mb=4.8),
            dict(value='simple', top1=0.604, top5=0.825, size_mib=4.8, label_mb=4.8),
            dict(value='complex', top1=0.588, top5=0.820, size_mib=7.7, label_mb=7.7)]
  return []


PAPER_CAPTION = {
    'squeeze_ratio': 'paper, Fig. 3(a): top-5 80.3% at SR 0.125 rising to a plateau of 86.0% '
                     'at SR 0.75; SR 1.0 (24MB) no better',
    'pct_3x3': 'paper, Fig. 3(b): top-5 plateaus at 85.6% with 50% 3x3 filters (13MB)',
    'bypass': 'paper, Table 3: simple bypass best (+2.9 top-1), complex bypass between',
}


# -- grouping ------------------------------------------------------------------------------


def varying(records: list[dict[str, Any]]) -> list[str]:
  """The metaparameters (and other override keys) that differ between runs, seeds aside."""
  keys = [k for k in sweep_lib.METAPARAMETERS
          if len({json.dumps(r.get(k)) for r in records}) > 1]
  others = set()
  for r in records:
    others.update(k for k in r.get('overrides', {}) if k != 'seed')
  for key in sorted(others):
    leaf = key.rsplit('.', 1)[-1]
    if leaf in keys or leaf in sweep_lib.METAPARAMETERS:
      continue
    if len({json.dumps(r.get('overrides', {}).get(key)) for r in records}) > 1:
      keys.append(key)
  return keys


def _value(record: dict[str, Any], key: str):
  return record.get(key) if key in record else record.get('overrides', {}).get(key)


def group(records: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
  """Runs of the same design point (different seeds) -> mean, min, max per metric."""
  groups = collections.OrderedDict()
  for r in records:
    groups.setdefault(tuple(json.dumps(_value(r, k)) for k in keys), []).append(r)
  out = []
  for runs in groups.values():
    g = {k: _value(runs[0], k) for k in keys}
    g['runs'] = runs
    g['seeds'] = sorted(r['seed'] for r in runs)
    for metric in ('top1', 'top5', 'size_mib', 'params', 'macs', 'wall_s'):
      values = np.array([r[metric] for r in runs if r.get(metric) is not None], float)
      if values.size:
        g[metric] = float(values.mean())
        g[metric + '_std'] = float(values.std())
        g[metric + '_min'], g[metric + '_max'] = float(values.min()), float(values.max())
      else:
        g[metric] = None
    out.append(g)
  # Numeric sweeps read left to right by their value; categorical ones keep sweep order.
  if len(keys) == 1 and all(isinstance(g[keys[0]], (int, float)) for g in out):
    out.sort(key=lambda g: g[keys[0]])
  return out


def point_label(g: dict[str, Any], keys: list[str]) -> str:
  parts = []
  for key in keys:
    value, short = g[key], SHORT.get(key, key.rsplit('.', 1)[-1])
    if key == 'pct_3x3':
      text = f'{value * 100:g}%'
    elif isinstance(value, float):
      text = f'{value:g}'
    else:
      text = str(value)
    parts.append(f'{short} {text}'.strip() if short else text)
  return ', '.join(parts) or 'base'


# -- figures -------------------------------------------------------------------------------


def _plt():
  import matplotlib
  matplotlib.use('Agg')  # files only; never open a window
  import matplotlib.pyplot as plt
  return plt


def _context(records: list[dict[str, Any]]) -> str:
  """'fashion_mnist, layout small, base_e 32, 300 steps' (what the runs share)."""
  r = records[0]
  parts = [str(r.get('dataset'))]
  for key in ('layout', 'base_e', 'incr_e', 'pct_3x3', 'squeeze_ratio', 'bypass'):
    if len({json.dumps(x.get(key)) for x in records}) == 1 and r.get(key) is not None:
      value = r[key]
      parts.append(f'{key} {value:g}' if isinstance(value, float) else f'{key} {value}')
  steps = {x.get('steps') for x in records}
  if len(steps) == 1 and None not in steps:
    parts.append(f'{steps.pop():,} steps')
  return ', '.join(parts)


def size_accuracy_figure(records: list[dict[str, Any]], keys: list[str], path: str) -> str:
  """Model size (MiB) vs top-1 and top-5: this sweep, and the paper's reported points.

  A categorical metaparameter (bypass) gets one x position per value instead,
  with its size in the tick label: two bypasses can have the same size.
  """
  plt = _plt()
  groups = group(records, keys)
  key = keys[0] if len(keys) == 1 else None
  paper = paper_points(key) if key else []
  on_imagenet = records[0].get('dataset') == 'imagenet2012' and records[0].get('layout') == 'v1.0'
  separate = bool(paper) and not on_imagenet
  ncols = 2 if separate else 1
  fig, axes = plt.subplots(2, ncols, figsize=(6.2 * ncols, 7.4), squeeze=False,
                           sharex='col', constrained_layout=True)
  numeric = key is not None and all(isinstance(g[key], (int, float)) for g in groups)
  categories = [g[key] for g in groups] if key and not numeric else None
  if categories is not None:
    categories += [p['value'] for p in paper if p['value'] not in categories]
  x_of = ((lambda value, size: categories.index(value)) if categories is not None
          else (lambda value, size: size))
  n_seeds = max(len(g['runs']) for g in groups)
  for row, metric in enumerate(('top1', 'top5')):
    ax = axes[row][0]
    have = [g for g in groups if g[metric] is not None]
    xs = np.array([x_of(g.get(key), g['size_mib']) for g in have], float)
    ys = np.array([100 * g[metric] for g in have])
    for g, x in zip(have, xs):  # every seed, faint, behind the mean
      ax.scatter([x if categories is not None else r['size_mib'] for r in g['runs']],
                 [100 * r[metric] for r in g['runs']],
                 s=12, color='tab:blue', alpha=0.3, linewidths=0, zorder=2)
    lo = ys - np.array([100 * g[metric + '_min'] for g in have])
    hi = np.array([100 * g[metric + '_max'] for g in have]) - ys
    ax.errorbar(xs, ys, yerr=[lo, hi] if n_seeds > 1 else None, fmt='o-' if numeric else 'o',
                color='tab:blue', capsize=3, lw=1.5, ms=6, zorder=3,
                label=f'this sweep (mean of {n_seeds} seed{"s" * (n_seeds > 1)}'
                      f'{", min-max bars" if n_seeds > 1 else ""})')
    for g, x, y in zip(have, xs, ys):
      ax.annotate(point_label(g, keys), (x, y), textcoords='offset points', xytext=(5, -12),
                  fontsize=8, color='tab:blue')
    if paper and on_imagenet:
      _draw_paper(ax, paper, metric, key, x_of)
    ax.set_ylabel(f'{"top-1" if metric == "top1" else "top-5"} accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
    _pad_limits(ax, xs, np.concatenate([ys - lo, ys + hi]) if n_seeds > 1 else ys,
                categorical=categories is not None)
    if separate:
      pax = axes[row][1]
      if _draw_paper(pax, paper, metric, key, x_of):
        pax.legend(loc='lower right', fontsize=8)
        shown = [p for p in paper if p[metric] is not None]
        _pad_limits(pax, np.array([x_of(p['value'], p['size_mib']) for p in shown], float),
                    np.array([100 * p[metric] for p in shown]), right=0.5,
                    categorical=categories is not None)
      else:
        pax.text(0.5, 0.5, 'not reported for these points', ha='center', va='center',
                 transform=pax.transAxes, color='gray')
      pax.grid(alpha=0.3)
  if categories is not None:
    sizes = {g[key]: f'{g["size_mib"]:.3g} MiB' for g in groups}
    axes[-1][0].set_xticks(range(len(categories)),
                           [f'{c}\n{sizes.get(c, "")}' for c in categories])
    axes[-1][0].set_xlabel(f'{key} (model size, float32)')
    if separate:
      paper_sizes = {p['value']: f'{p["label_mb"]:g}MB' for p in paper}
      axes[-1][1].set_xticks(range(len(categories)),
                             [f'{c}\n{paper_sizes.get(c, "")}' for c in categories])
      axes[-1][1].set_xlabel(f'{key} (model size as reported)')
  else:
    axes[-1][0].set_xlabel('model size (MiB, float32)')
    if separate:
      axes[-1][1].set_xlabel('model size (MiB, float32; paper label in MB)')
  axes[0][0].set_title(f'this sweep: {_context(records)}', fontsize=9)
  if separate:
    axes[0][1].set_title('reference: paper, ImageNet, SqueezeNet v1.0 (reported)', fontsize=9)
  title = {'squeeze_ratio': 'Figure 3(a): squeeze ratio (SR)',
           'pct_3x3': 'Figure 3(b): share of 3x3 expand filters',
           'bypass': 'Table 3: bypass connections'}.get(
               key, 'design space: ' + (', '.join(keys) or 'one point'))
  fig.suptitle(title + (f'\n{PAPER_CAPTION[key]}' if key in PAPER_CAPTION else ''), fontsize=10)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _draw_paper(ax, paper: list[dict[str, Any]], metric: str, key: str, x_of) -> bool:
  have = [p for p in paper if p[metric] is not None]
  if not have:
    return False
  xs = [x_of(p['value'], p['size_mib']) for p in have]
  ys = [100 * p[metric] for p in have]
  ax.plot(xs, ys, 's--' if key != 'bypass' else 's', color='tab:gray', ms=7, lw=1,
          mfc='white', label='paper, ImageNet (reported)', zorder=2)
  for p, x, y in zip(have, xs, ys):
    label = point_label({key: p['value']}, [key])
    ax.annotate(f'{label} ({p["label_mb"]:g}MB): {y:.1f}%', (x, y), textcoords='offset points',
                xytext=(5, 6), fontsize=8, color='dimgray')
  return True


def _pad_limits(ax, xs: np.ndarray, ys: np.ndarray, right: float = 0.3,
                categorical: bool = False) -> None:
  """Room for the point labels around the data (and a minimum span for single points)."""
  if xs.size == 0:
    return
  if categorical:
    xs = np.array([-0.3, max(xs.max(), 1) + 0.2])
  xspan = max(xs.max() - xs.min(), 0.2 * max(abs(xs.max()), 1e-3))
  yspan = max(ys.max() - ys.min(), 1.0)
  ax.set_xlim(xs.min() - 0.12 * xspan, xs.max() + right * xspan)
  ax.set_ylim(ys.min() - 0.3 * yspan, ys.max() + 0.2 * yspan)


def error_edf_figure(records: list[dict[str, Any]], keys: list[str], path: str) -> str:
  """Empirical CDF of top-1 error, one curve per value of a categorical metaparameter."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
  split = next((k for k in keys if len({json.dumps(_value(r, k)) for r in records}) <= 6),
               None)
  curves = collections.OrderedDict()
  for r in records:
    name = point_label({split: _value(r, split)}, [split]) if split else 'all runs'
    curves.setdefault(name, []).append(100 * (1 - r['top1']))
  if split and len(curves) > 1:
    curves['all runs'] = [100 * (1 - r['top1']) for r in records]
  for name, errors in curves.items():
    errors = np.sort(errors)
    ax.step(np.concatenate([errors[:1], errors]), np.arange(len(errors) + 1) / len(errors),
            where='post',
            lw=2.2 if name == 'all runs' else 1.4,
            color='black' if name == 'all runs' else None,
            label=f'{name} (n={len(errors)})')
  ax.set_xlabel('top-1 error (%)')
  ax.set_ylabel('fraction of runs with error <= x')
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  ax.set_title(f'top-1 error EDF over {len(records)} runs\n{_context(records)}', fontsize=9)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# -- table ---------------------------------------------------------------------------------


def _pct(g: dict[str, Any], metric: str) -> str:
  if g.get(metric) is None:
    return ''
  text = f'{100 * g[metric]:.2f}'
  if len(g['runs']) > 1:
    text += f' ± {100 * g[metric + "_std"]:.2f}'
  return text


def table(records: list[dict[str, Any]], failed: list[dict[str, Any]], keys: list[str]) -> str:
  """Markdown: every design point (mean ± std over seeds), the paper's numbers beside it."""
  shown = keys or ['squeeze_ratio']
  key = keys[0] if len(keys) == 1 else None
  paper = {json.dumps(p['value']): p for p in paper_points(key)} if key else {}
  header = [*shown, 'seeds', 'parameters', 'size (MiB)', 'MMACs', 'top-1 (%)', 'top-5 (%)',
            'wall (s)']
  if paper:
    header += ['paper top-1 (%)', 'paper top-5 (%)', 'paper size (MB)']
  lines = [f'Sweep: {_context(records)}.' if records else 'Sweep: no finished runs.', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(shown) + ['--:'] * (len(header) - len(shown))) + '|']
  for g in group(records, shown):
    cells = [point_label({k: g[k]}, [k]).replace('SR ', '').replace('3x3 ', '') for k in shown]
    cells += [str(len(g['runs'])), f'{g["params"]:,.0f}', f'{g["size_mib"]:.3f}',
              f'{g["macs"] / 1e6:.1f}' if g.get('macs') is not None else '',
              _pct(g, 'top1'), _pct(g, 'top5'),
              f'{g["wall_s"]:.0f}' if g.get('wall_s') is not None else '']
    if paper:
      p = paper.get(json.dumps(g[key]))
      cells += ([f'{100 * p["top1"]:.1f}' if p and p['top1'] is not None else '',
                 f'{100 * p["top5"]:.1f}' if p and p['top5'] is not None else '',
                 f'{p["label_mb"]:g}' if p else ''])
    lines.append('| ' + ' | '.join(cells) + ' |')
  if any(len(g['runs']) > 1 for g in group(records, shown)):
    lines += ['', 'Top-1 and top-5: mean ± standard deviation over seeds.']
  if paper:
    lines += ['', 'Paper: ImageNet, SqueezeNet v1.0, Iandola et al. 2016 (reported numbers only; '
              'blank = only drawn in the figure). This sweep\'s dataset and budget differ: '
              'compare shapes, not levels.']
  if failed:
    lines += ['', f'Failed points ({len(failed)}):', '']
    lines += [f'- `{r["name"]}`: {r.get("error", "")}' for r in failed]
  return '\n'.join(lines) + '\n'


# -- entry points ----------------------------------------------------------------------------


def make_report(workdir: str, edf_min_runs: int = EDF_MIN_RUNS) -> list[str]:
  """Writes table.md and the figures for a sweep directory; returns their paths."""
  path = os.path.join(workdir, sweep_lib.RESULTS)
  if not os.path.exists(path):
    raise UserError(f'--workdir={workdir!r} has no {sweep_lib.RESULTS}: run `squeezejax sweep` '
                    'there first')
  records = sweep_lib.read_results(path)
  ok = [r for r in records if r.get('status') == 'ok' and r.get('top1') is not None]
  failed = [r for r in records if r.get('status') != 'ok']
  keys = varying(ok) if ok else []
  written = []
  table_path = os.path.join(workdir, 'table.md')
  with open(table_path, 'w') as f:
    f.write(table(ok, failed, keys))
  written.append(table_path)
  if ok:
    name = FIGURE_NAMES[keys[0]] if len(keys) == 1 and keys[0] in DRAWN else 'size_vs_accuracy'
    written.append(size_accuracy_figure(ok, keys, os.path.join(workdir, name + '.png')))
  if len(ok) >= edf_min_runs:
    written.append(error_edf_figure(ok, keys, os.path.join(workdir, 'error_edf.png')))
  return written


def main(argv: list[str]) -> int:
  parser = flags.ArgumentParser(
      prog='squeezejax report',
      description='Figures (PNG) and a Markdown table from a sweep\'s results.jsonl.')
  parser.add_argument('--workdir', required=True, help='the sweep directory')
  parser.add_argument('--edf_min_runs', type=int, default=EDF_MIN_RUNS,
                      help='draw the error EDF from this many finished runs on')
  args = parser.parse_args(argv)
  for path in make_report(args.workdir, args.edf_min_runs):
    print(path)
  return 0
