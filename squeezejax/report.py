r"""`squeezejax report --workdir=DIR`: figures and a table from a sweep's results.jsonl.

What to draw is declared by the experiment file (`get_report(arg)`), which the
sweep copies into `WORKDIR/sweep.json`, so a report needs only the workdir:

  {'x': 'freq',                       # the metaparameter the sweep studies
   'figure': 'freq.png', 'title': '...', 'caption': '...',
   'reference': {                     # optional: published numbers to compare with
       'label': 'paper',              # column headers, legend
       'source': '...',               # citation (panel title, table note)
       'setting': {'dataset': ..., 'layout': ...},  # where the numbers were measured
       'points': [{'value': ..., 'top1': ..., 'top5': ...,  # None = not stated
                   'size_mib': ...,   # the x position (float32 MiB)
                   'stated_mb': ...}, ...]}}  # the size as the source states it

Without a declaration the figure is `size_vs_accuracy.png` over whatever varies.
The figure plots model size (float32 MiB) against top-1 and top-5 accuracy, the
mean over seeds with min-max bars, each point labelled with its value; an x whose
values are not all numbers gets one position per value instead. Reference points
are drawn on the same axes when the sweep ran in their setting, else in a panel
beside it. `table.md` lists every point (with the reference numbers), and with
many runs `error_edf.png` shows the empirical distribution of top-1 error (pycls:
compare design spaces by their error distributions, not by one run).
"""

from __future__ import annotations

import collections
import json
import os
import textwrap
from typing import Any

import numpy as np

from squeezejax import cli
from squeezejax import files
from squeezejax import results
from squeezejax import families
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

EDF_MIN_RUNS = 10
GENERIC_FIGURE = 'size_vs_accuracy.png'


# -- grouping ------------------------------------------------------------------------------


def varying(records: list[dict[str, Any]]) -> list[str]:
  """The metaparameters (and other override keys) that differ between runs, seeds aside."""
  keys = [k for k in families.METAPARAMETERS
          if len({json.dumps(r.get(k)) for r in records}) > 1]
  others = {k for r in records for k in r.get('overrides', {}) if k != 'seed'}
  for key in sorted(others):
    if key.rsplit('.', 1)[-1] in families.METAPARAMETERS:
      continue  # a spec field: its column above says whether it varies
    if len({json.dumps(r.get('overrides', {}).get(key)) for r in records}) > 1:
      keys.append(key)
  return keys


def _value(record: dict[str, Any], key: str):
  return record.get(key) if key in record else record.get('overrides', {}).get(key)


def _numeric(values) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def group(records: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
  """Runs of the same design point (different seeds) -> mean, std, min, max per metric."""
  groups = collections.OrderedDict()
  for r in records:
    groups.setdefault(tuple(json.dumps(_value(r, k)) for k in keys), []).append(r)
  out = []
  for runs in groups.values():
    g = {k: _value(runs[0], k) for k in keys}
    g['runs'] = runs
    for metric in ('top1', 'top5', 'size_mib', 'params', 'macs', 'wall_s'):
      values = np.array([r[metric] for r in runs if r.get(metric) is not None], float)
      g[metric] = float(values.mean()) if values.size else None
      if values.size:
        g[metric + '_std'] = float(values.std())
        g[metric + '_min'], g[metric + '_max'] = float(values.min()), float(values.max())
    out.append(g)
  # Numeric sweeps read left to right by their value; categorical ones keep sweep order.
  if len(keys) == 1 and _numeric(g[keys[0]] for g in out):
    out.sort(key=lambda g: g[keys[0]])
  return out


def _format(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def point_label(values: dict[str, Any]) -> str:
  """'SR 0.125, bypass simple': each key's short name and value."""
  parts = [f'{spec_lib.field_label(k.rsplit(".", 1)[-1])} {_format(v)}'
           for k, v in values.items()]
  return ', '.join(parts) or 'base'


def _context(records: list[dict[str, Any]]) -> str:
  """'fashion_mnist, layout small, base_e 32, ..., 300 steps' (what the runs share)."""
  r = records[0]
  parts = [str(r.get('dataset'))]
  for key in families.METAPARAMETERS:
    if r.get(key) is not None and len({json.dumps(x.get(key)) for x in records}) == 1:
      parts.append(f'{key} {_format(r[key])}')
  steps = {x.get('steps') for x in records}
  if len(steps) == 1 and None not in steps:
    parts.append(f'{steps.pop():,} steps')
  return ', '.join(parts)


def _in_setting(records: list[dict[str, Any]], reference: dict[str, Any]) -> bool:
  """Whether every run was made in the reference's setting (then they share the axes)."""
  setting = reference.get('setting', {})
  return all(r.get(k) == v for r in records for k, v in setting.items())


# -- figures -------------------------------------------------------------------------------


def _plt():
  import matplotlib
  matplotlib.use('Agg')  # files only; never open a window
  import matplotlib.pyplot as plt
  return plt


def size_accuracy_figure(records: list[dict[str, Any]], keys: list[str], path: str,
                         declared: dict[str, Any] | None = None) -> str:
  """Model size (MiB) vs top-1 and top-5 over the design points; see the module docstring."""
  plt = _plt()
  declared = declared or {}
  groups = group(records, keys)
  key = keys[0] if len(keys) == 1 else None
  reference = (declared.get('reference') or {}) if key else {}
  points = reference.get('points', [])
  beside = bool(points) and not _in_setting(records, reference)  # else on the same axes
  ncols = 1 + beside
  fig, axes = plt.subplots(2, ncols, figsize=(6.2 * ncols, 7.4), squeeze=False,
                           sharex='col', constrained_layout=True)
  categories = None  # an x that is not a number: one position per value
  if key is not None and not _numeric(g[key] for g in groups):
    categories = [g[key] for g in groups]
    categories += [p['value'] for p in points if p['value'] not in categories]
  x_of = ((lambda value, size: categories.index(value)) if categories is not None
          else (lambda value, size: size))
  for row, metric in enumerate(('top1', 'top5')):
    ax = axes[row][0]
    xs, ys = _draw_sweep(ax, groups, keys, metric, x_of, categories is not None)
    if points and not beside:
      rx, ry = _draw_reference(ax, reference, key, metric, x_of, categories is not None)
      xs, ys = np.concatenate([xs, rx]), np.concatenate([ys, ry])
    ax.set_ylabel(f'{"top-1" if metric == "top1" else "top-5"} accuracy (%)')
    _finish(ax, xs, ys, categories is not None)
    if beside:
      rx, ry = _draw_reference(axes[row][1], reference, key, metric, x_of, categories is not None)
      if not rx.size:
        axes[row][1].text(0.5, 0.5, 'not reported for these points', ha='center',
                          va='center', transform=axes[row][1].transAxes, color='gray')
      _finish(axes[row][1], rx, ry, categories is not None, right=0.5)
  sizes = ({g.get(key): f'{g["size_mib"]:.3g} MiB' for g in groups},
           {p['value']: f'{p["stated_mb"]:g}MB' for p in points if p.get('stated_mb')})
  for col, what in enumerate(('model size, float32', 'model size as reported')[:ncols]):
    if categories is not None:
      axes[-1][col].set_xticks(range(len(categories)),
                               [f'{c}\n{sizes[col].get(c, "")}' for c in categories])
      axes[-1][col].set_xlabel(f'{key} ({what})')
    else:
      axes[-1][col].set_xlabel(f'model size (MiB, float32{"; reported in MB" * col})')
  axes[0][0].set_title(textwrap.fill(f'this sweep: {_context(records)}', 90), fontsize=9)
  if beside:
    axes[0][1].set_title(textwrap.fill(f'reference: {reference.get("source", "")}', 90),
                         fontsize=9)
  title = declared.get('title') or 'design space: ' + (', '.join(keys) or 'one point')
  caption = declared.get('caption')
  fig.suptitle(title + (f'\n{textwrap.fill(caption, 85 * ncols)}' if caption else ''),
               fontsize=10)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _draw_sweep(ax, groups, keys, metric: str, x_of, categorical: bool):
  """Each point's mean (min-max bars over seeds), every seed faint behind it, labelled;
  returns the x and y extent drawn."""
  have = [g for g in groups if g[metric] is not None]
  key = keys[0] if len(keys) == 1 else None
  xs = np.array([x_of(g.get(key), g['size_mib']) for g in have], float)
  ys = np.array([100 * g[metric] for g in have])
  for g, x in zip(have, xs):
    ax.scatter([x if categorical else r['size_mib'] for r in g['runs']],
               [100 * r[metric] for r in g['runs']],
               s=12, color='tab:blue', alpha=0.3, linewidths=0, zorder=2)
  n_seeds = max(len(g['runs']) for g in groups)
  lo = ys - np.array([100 * g[metric + '_min'] for g in have])
  hi = np.array([100 * g[metric + '_max'] for g in have]) - ys
  line = key is not None and not categorical  # a numeric x: read along the line
  ax.errorbar(xs, ys, yerr=[lo, hi] if n_seeds > 1 else None, fmt='o-' if line else 'o',
              color='tab:blue', capsize=3, lw=1.5, ms=6, zorder=3,
              label=f'this sweep (mean of {n_seeds} seed{"s" * (n_seeds > 1)}'
                    f'{", min-max bars" if n_seeds > 1 else ""})')
  for g, x, y in zip(have, xs, ys):
    ax.annotate(point_label({k: g[k] for k in keys}), (x, y), textcoords='offset points',
                xytext=(5, -12), fontsize=8, color='tab:blue')
  return xs, np.concatenate([ys - lo, ys + hi])


def _draw_reference(ax, reference: dict[str, Any], key: str, metric: str, x_of,
                    categorical: bool):
  """The reference's stated numbers for `metric`, labelled; returns their x and y."""
  have = [p for p in reference.get('points', []) if p.get(metric) is not None]
  xs = np.array([x_of(p['value'], p['size_mib']) for p in have], float)
  ys = np.array([100 * p[metric] for p in have])
  if have:
    setting = ', '.join(str(v) for v in reference.get('setting', {}).values())
    ax.plot(xs, ys, 's' if categorical else 's--', color='tab:gray', ms=7, lw=1, mfc='white',
            label=f'{reference.get("label", "reference")}'
                  f'{", " + setting if setting else ""} (reported)', zorder=2)
  for p, x, y in zip(have, xs, ys):
    size = f' ({p["stated_mb"]:g}MB)' if p.get('stated_mb') else ''
    ax.annotate(f'{point_label({key: p["value"]})}{size}: {y:.1f}%', (x, y),
                textcoords='offset points', xytext=(5, 6), fontsize=8, color='dimgray')
  return xs, ys


def _finish(ax, xs: np.ndarray, ys: np.ndarray, categorical: bool, right: float = 0.3):
  """Grid, legend, and room for the point labels (a minimum span for single points)."""
  ax.grid(alpha=0.3)
  if xs.size == 0:
    return
  ax.legend(loc='lower right', fontsize=8)
  if categorical:
    xs = np.array([-0.3, max(xs.max(), 1) + 0.2])
  xspan = max(xs.max() - xs.min(), 0.2 * max(abs(xs.max()), 1e-3))
  yspan = max(ys.max() - ys.min(), 1.0)
  ax.set_xlim(xs.min() - 0.12 * xspan, xs.max() + right * xspan)
  ax.set_ylim(ys.min() - 0.3 * yspan, ys.max() + 0.2 * yspan)


def error_edf_figure(records: list[dict[str, Any]], keys: list[str], path: str) -> str:
  """Empirical CDF of top-1 error, one curve per value of a key with few values."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
  split = next((k for k in keys if len({json.dumps(_value(r, k)) for r in records}) <= 6),
               None)
  curves = collections.OrderedDict()
  for r in records:
    name = point_label({split: _value(r, split)}) if split else 'all runs'
    curves.setdefault(name, []).append(100 * (1 - r['top1']))
  if split and len(curves) > 1:
    curves['all runs'] = [100 * (1 - r['top1']) for r in records]
  for name, errors in curves.items():
    errors = np.sort(errors)
    ax.step(np.concatenate([errors[:1], errors]), np.arange(len(errors) + 1) / len(errors),
            where='post', lw=2.2 if name == 'all runs' else 1.4,
            color='black' if name == 'all runs' else None, label=f'{name} (n={len(errors)})')
  ax.set_xlabel('top-1 error (%)')
  ax.set_ylabel('fraction of runs with error <= x')
  ax.set_ylim(0, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  ax.set_title(textwrap.fill(f'top-1 error EDF over {len(records)} runs; {_context(records)}',
                             80), fontsize=9)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def confusion_figure(result: dict[str, Any], path: str) -> str:
  """A fine-tuning report's confusion matrix (true rows, predicted columns) as a PNG."""
  plt = _plt()
  counts = np.asarray(result['confusion_matrix'])
  names = result['class_names']
  n = len(names)
  fig, ax = plt.subplots(figsize=(2 + 0.6 * n, 1.6 + 0.6 * n))
  ax.imshow(counts, cmap='Blues')
  ax.set_xticks(range(n), names, rotation=45, ha='right')
  ax.set_yticks(range(n), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'test accuracy {result["accuracy"]:.1%}')
  if n <= 30:  # beyond that the counts are unreadable
    for i in range(n):
      for j in range(n):
        ax.text(j, i, int(counts[i, j]), ha='center', va='center',
                color='white' if counts[i, j] > counts.max() / 2 else 'black')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
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


def table(records: list[dict[str, Any]], failed: list[dict[str, Any]], keys: list[str],
          declared: dict[str, Any] | None = None) -> str:
  """Markdown: every design point (mean ± std over seeds), reference numbers beside it."""
  reference = (declared or {}).get('reference') or {}
  points = reference.get('points', []) if len(keys) == 1 else []
  label = reference.get('label', 'reference')
  header = [*keys, 'seeds', 'parameters', 'size (MiB)', 'MMACs', 'top-1 (%)', 'top-5 (%)',
            'wall (s)']
  if points:
    header += [f'{label} top-1 (%)', f'{label} top-5 (%)', f'{label} size (MB)']
  lines = [f'Sweep: {_context(records)}.' if records else 'Sweep: no finished runs.', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(keys) + ['--:'] * (len(header) - len(keys))) + '|']
  groups = group(records, keys)
  for g in groups:
    cells = [_format(g[k]) for k in keys]
    cells += [str(len(g['runs'])), f'{g["params"]:,.0f}', f'{g["size_mib"]:.3f}',
              f'{g["macs"] / 1e6:.1f}' if g.get('macs') is not None else '',
              _pct(g, 'top1'), _pct(g, 'top5'),
              f'{g["wall_s"]:.0f}' if g.get('wall_s') is not None else '']
    if points:
      p = next((p for p in points if p['value'] == g[keys[0]]), {})
      cells += [f'{100 * p["top1"]:.1f}' if p.get('top1') is not None else '',
                f'{100 * p["top5"]:.1f}' if p.get('top5') is not None else '',
                f'{p["stated_mb"]:g}' if p.get('stated_mb') else '']
    lines.append('| ' + ' | '.join(cells) + ' |')
  if any(len(g['runs']) > 1 for g in groups):
    lines += ['', 'Top-1 and top-5: mean ± standard deviation over seeds.']
  if points:
    note = (f'{label.capitalize()}: {reference.get("source", "")} (stated numbers only; '
            'blank = not stated).')
    if not _in_setting(records, reference):
      note += ' This sweep\'s setting differs: compare shapes, not levels.'
    lines += ['', note]
  if failed:
    lines += ['', f'Failed points ({len(failed)}):', '']
    lines += [f'- `{r["name"]}`: {r.get("error", "")}' for r in failed]
  return '\n'.join(lines) + '\n'


# -- entry points ----------------------------------------------------------------------------


def make_report(workdir: str, edf_min_runs: int = EDF_MIN_RUNS) -> list[str]:
  """Writes table.md and the figures for a sweep directory; returns their paths."""
  path = os.path.join(workdir, results.RESULTS)
  if not os.path.exists(path):
    raise UserError(f'--workdir={workdir!r} has no {results.RESULTS}: run `squeezejax sweep` '
                    'there first')
  records = results.read(path)
  ok = [r for r in records if r.get('status') == 'ok' and r.get('top1') is not None]
  failed = [r for r in records if r.get('status') != 'ok']
  declared = (results.read_sweep_info(workdir) or {}).get('report') or {}
  keys = varying(ok) if ok else []
  x = declared.get('x')
  if x:  # the declared metaparameter first (and even if only one of its values ran)
    keys = [x, *(k for k in keys if k != x)]
  written = [os.path.join(workdir, 'table.md')]
  files.write_atomic(written[0], table(ok, failed, keys, declared))
  if ok:
    name = declared.get('figure') or GENERIC_FIGURE
    written.append(size_accuracy_figure(ok, keys, os.path.join(workdir, name), declared))
  if len(ok) >= edf_min_runs:
    written.append(error_edf_figure(ok, keys, os.path.join(workdir, 'error_edf.png')))
  return written


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax report',
      description='Figures (PNG) and a Markdown table from a sweep\'s results.jsonl.')
  parser.add_argument('--workdir', required=True, help='the sweep directory')
  parser.add_argument('--edf_min_runs', type=int, default=EDF_MIN_RUNS,
                      help='draw the error EDF from this many finished runs on')
  args = parser.parse_args(argv)
  for path in make_report(args.workdir, args.edf_min_runs):
    print(path)
  return 0
