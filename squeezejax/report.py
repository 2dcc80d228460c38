r"""`squeezejax report --workdir=DIR`: figures, a table and findings from results.jsonl.

What to draw is declared by the experiment file (`get_report(arg)`), which the
sweep copies into `WORKDIR/sweep.json`, so a report needs only the workdir:

  {'x': 'freq',                       # the metaparameter the sweep studies
   'figure': 'freq.png', 'title': '...', 'caption': '...',
   'reference': {                     # optional: published numbers to compare with
       'label': 'paper', 'source': '...',  # legend, citation
       'setting': {'dataset': ..., 'layout': ...},  # where the numbers were measured
       'baseline': 2,                 # the value the changes are measured from
       'points': [{'value': ..., 'top1': ..., 'top5': ...,  # None = not stated
                   'size_mib': ..., 'stated_mb': ...}, ...]},
   'claims': [...], 'margin': 0.005,  # tested in the findings: squeezejax.findings
   'design_space': {'compare': 'bypass'},  # a sampled design space: EDFs compared
   'metrics': ('top1',)}              # default: top-5 only with >= 20 classes

The figure plots model size (float32 MiB) against accuracy: the mean over seeds with
its 95% Student t interval, each seed faint, n in the legend; an x whose values are
not all numbers gets one position per value. With a reference and its baseline, a
second panel puts this sweep and the reference on the same axes as the relative
change of error from the baseline point against the size ratio (the reference's own
levels only where the sweep ran in its setting). `table.md` lists every point and
ends with the findings. A sampled design space (or any sweep of many runs) gets
error EDFs with bootstrap bands, two of them compared by KS distance and mean error.
"""

from __future__ import annotations

import collections
import json
import os
import textwrap
from typing import Any, Callable

import numpy as np

from squeezejax import cli
from squeezejax import files
from squeezejax import findings
from squeezejax import points
from squeezejax.points import metrics, varying  # pylint: disable=unused-import
from squeezejax import results
from squeezejax import stats
from squeezejax.compression import table2
from squeezejax.errors import UserError

EDF_MIN_RUNS = 10
GENERIC_FIGURE = 'size_vs_accuracy.png'


# -- figures -------------------------------------------------------------------------------


def _plt():
  import matplotlib
  matplotlib.use('Agg')  # files only; never open a window
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=120, metadata={'Software': None})  # no version stamp: redraws match
  _plt().close(fig)
  return path


def size_accuracy_figure(records: list[dict[str, Any]], keys: list[str], path: str,
                         declared: dict[str, Any] | None = None) -> str:
  """Left: model size (MiB) vs accuracy, the mean over seeds with its 95% t interval and
  each seed faint. Right (with a declared reference and baseline): the change of error
  from the baseline point (SqueezeNet's) against the size ratio, this sweep's and the
  reference's on the same axes, so their shapes compare although their levels cannot."""
  plt = _plt()
  declared = declared or {}
  groups = points.group(records, keys)
  key = keys[0] if len(keys) == 1 else None
  reference = (declared.get('reference') or {}) if key else {}
  same_axes = bool(reference.get('points')) and points.in_setting(records, reference)
  base = next((g for g in groups if 'baseline' in reference and g[key] == reference['baseline']),
              None)
  rows = metrics(records, declared)
  ncols = 1 + (base is not None)
  fig, axes = plt.subplots(len(rows), ncols, figsize=(6.2 * ncols, 1.2 + 3.9 * len(rows)),
                           squeeze=False, constrained_layout=True)
  categories = None  # an x that is not a number: one position per value
  if key is not None and not points.numeric(g[key] for g in groups):
    categories = [g[key] for g in groups]
    categories += [p['value'] for p in reference.get('points', []) if p['value'] not in categories]
  x_of = ((lambda value, size: categories.index(value)) if categories is not None
          else (lambda value, size: size))
  for row, metric in enumerate(rows):
    ax = axes[row][0]
    xs, ys = _draw_sweep(ax, groups, keys, metric, x_of, categories is not None)
    if same_axes:
      rx, ry = _draw_reference(ax, reference, key, metric, x_of, categories is not None)
      xs, ys = np.concatenate([xs, rx]), np.concatenate([ys, ry])
    ax.set_ylabel(f'{_METRIC[metric]} accuracy (%)')
    _finish(ax, xs, ys, categories is not None)
    if categories is not None:
      sizes = {g.get(key): f'{g["size_mib"]:.3g} MiB' for g in groups}
      ax.set_xticks(range(len(categories)), [f'{c}\n{sizes.get(c, "")}' for c in categories])
      ax.set_xlabel(f'{key} (model size, float32)')
    else:
      ax.set_xlabel('model size (MiB, float32)')
    if base is not None:
      _draw_change(axes[row][1], records, groups, base, key, metric, reference,
                   (metric,) if len(rows) > 1 else ('top1', 'top5'), categories)
  axes[0][0].set_title(textwrap.fill(f'this sweep: {points.context(records)}', 80), fontsize=9)
  if base is not None:
    axes[0][1].set_title(textwrap.fill(
        f'change from {points.point_label({key: base[key]})}: this sweep and '
        f'{reference.get("source", "the reference")}', 80), fontsize=9)
  title = declared.get('title') or 'design space: ' + (', '.join(keys) or 'one point')
  caption = declared.get('caption')
  fig.suptitle(title + (f'\n{textwrap.fill(caption, 85 * ncols)}' if caption else ''),
               fontsize=10)
  return _save(fig, path)


_METRIC = {'top1': 'top-1', 'top5': 'top-5'}


def _draw_sweep(ax, groups, keys, metric: str, x_of, categorical: bool):
  """Each point's mean with its 95% t interval over seeds, every seed faint behind it,
  labelled; returns the x and y extent drawn."""
  have = [g for g in groups if g[metric] is not None]
  key = keys[0] if len(keys) == 1 else None
  xs = np.array([x_of(g.get(key), g['size_mib']) for g in have], float)
  ys = np.array([100 * g[metric] for g in have])
  for g, x in zip(have, xs):
    ax.scatter([x if categorical else r['size_mib'] for r in g['runs']],
               [100 * r[metric] for r in g['runs']],
               s=12, color='tab:blue', alpha=0.3, linewidths=0, zorder=2)
  lo = ys - np.array([100 * g[metric + '_lo'] for g in have])
  hi = np.array([100 * g[metric + '_hi'] for g in have]) - ys
  spread = max(len(g['runs']) for g in have) > 1
  line = key is not None and not categorical  # a numeric x: read along the line
  ax.errorbar(xs, ys, yerr=[lo, hi] if spread else None, fmt='o-' if line else 'o',
              color='tab:blue', capsize=3, lw=1.5, ms=6, zorder=3,
              label=f'this sweep: mean{" ± 95% t interval" * spread}, {points.seeds_label(have)}'
                    f'{" (dots)" * spread}')
  for g, x, y in zip(have, xs, ys):
    ax.annotate(points.point_label({k: g[k] for k in keys}), (x, y), textcoords='offset points',
                xytext=(5, -12), fontsize=8, color='tab:blue')
  lows = np.array([100 * min(g[metric + '_lo'], g[metric + '_min']) for g in have])
  highs = np.array([100 * max(g[metric + '_hi'], g[metric + '_max']) for g in have])
  return xs, np.concatenate([lows, highs])


def _draw_reference(ax, reference: dict[str, Any], key: str, metric: str, x_of,
                    categorical: bool):
  """The reference's stated numbers for `metric`, labelled; returns their x and y."""
  have = [p for p in reference.get('points', []) if p.get(metric) is not None]
  xs = np.array([x_of(p['value'], p['size_mib']) for p in have], float)
  ys = np.array([100 * p[metric] for p in have])
  if have:
    ax.plot(xs, ys, 's' if categorical else 's--', color='tab:gray', ms=7, lw=1, mfc='white',
            label=f'{reference.get("label", "reference")} (stated)', zorder=2)
  for p, x, y in zip(have, xs, ys):
    size = f' ({p["stated_mb"]:g}MB)' if p.get('stated_mb') else ''
    ax.annotate(f'{points.point_label({key: p["value"]})}{size}: {y:.1f}%', (x, y),
                textcoords='offset points', xytext=(5, 6), fontsize=8, color='dimgray')
  return xs, ys


def _draw_change(ax, records, groups, base, key: str, metric: str, reference: dict[str, Any],
                 paper_metrics: tuple[str, ...], categories: list | None):
  """Relative change of error from the baseline point (%) against the size ratio (or,
  for a categorical x, by value with the ratio in the tick): this sweep's (paired by
  seed, 95% interval, seeds faint) and the reference's stated points, on one axis."""
  stated = {p['value']: p for p in reference.get('points', [])}
  ref_base = stated.get(base[key])
  def x_of(value, ratio, side):  # categorical: the sweep left of a tick, the reference right
    return ratio if categories is None else categories.index(value) + 0.12 * side
  rows = []  # x, change, interval low, high (%), label
  for g in (g for g in groups if g[metric] is not None):
    x = x_of(g[key], g['size_mib'] / base['size_mib'], -1)
    a, b, _ = findings.compared(records, {key: base[key]}, {key: g[key]}, metric)
    a, b = {k: 1 - v for k, v in a.items()}, {k: 1 - v for k, v in b.items()}
    i = stats.relative_change(a, b).interval if g is not base else stats.Interval(0, 0, 0, 1, 't')
    if g is not base and all(k in b for k in a) and len(a) > 1:
      ax.scatter([x] * len(a), [100 * (b[k] / a[k] - 1) for k in a], s=12, color='tab:blue',
                 alpha=0.3, linewidths=0)
    rows.append((x, 100 * i.mean, 100 * i.lo, 100 * i.hi, points.point_label({key: g[key]})))
  rows.sort()
  x, y, lo, hi = (np.array(c) for c in list(zip(*rows))[:4])
  spread = bool(np.any(hi > lo))
  ax.errorbar(x, y, yerr=[y - lo, hi - y] if spread else None, fmt='o' if categories else 'o-',
              color='tab:blue', capsize=3, lw=1.5, ms=6, zorder=3,
              label=f'this sweep, {_METRIC[metric]} error{" (95% interval)" * spread}, '
                    f'{points.seeds_label(groups)}')
  for xi, yi, *_, label in rows:
    ax.annotate(f'{yi:+.1f}%' if categories else label, (xi, yi), textcoords='offset points',
                xytext=(5, -12), fontsize=8, color='tab:blue')
  xs, ys = list(x), list(lo) + list(hi)
  if not any(sum(p.get(m) is not None for p in stated.values()) > 1 for m in paper_metrics):
    ax.text(0.02, 0.03, f'{reference.get("label", "the reference")} states no number here '
            'but at the baseline', transform=ax.transAxes, fontsize=8, color='dimgray')
  for m in paper_metrics:
    have = sorted((p for p in stated.values() if ref_base and p.get(m) is not None
                   and ref_base.get(m) is not None), key=lambda p: p['size_mib'])
    if len(have) < 2:
      continue  # the baseline alone says nothing about a change
    rx = [x_of(p['value'], p['size_mib'] / ref_base['size_mib'], 1) for p in have]
    ry = [100 * ((1 - p[m]) / (1 - ref_base[m]) - 1) for p in have]
    setting = ', '.join(str(v) for v in reference.get('setting', {}).values())
    marker = {'top1': '^', 'top5': 's'}[m]
    ax.plot(rx, ry, marker if categories else marker + '--', ms=7, lw=1, mfc='white',
            color='tab:gray' if m == 'top5' else 'tab:orange',
            label=f'{reference.get("label", "reference")}, {_METRIC[m]} error'
                  f'{", " + setting if setting else ""} (stated)')
    for p, xi, yi in zip(have, rx, ry):
      if p is not ref_base:
        ax.annotate(f'{yi:+.0f}%' if categories else f'{points.point_label({key: p["value"]})}: '
                    f'{yi:+.0f}%', (xi, yi), textcoords='offset points', xytext=(5, 5),
                    fontsize=8, color='dimgray')
    xs, ys = xs + rx, ys + ry
  ax.axhline(0, color='black', lw=0.6)
  where = points.point_label({key: base[key]})
  ax.set_ylabel(f'change of error from {where} (%; < 0: fewer errors)')
  _finish(ax, np.array(xs), np.array(ys), categories is not None)
  if categories is None:
    ax.set_xlabel(f'size ratio (model size / size at {where})')
    return
  ours = {g[key]: f'x{g["size_mib"] / base["size_mib"]:.2f}' for g in groups}
  theirs = {v: f' | x{p["size_mib"] / ref_base["size_mib"]:.2f}' for v, p in stated.items()
            if ref_base}
  ax.set_xticks(range(len(categories)),
                [f'{c}\n{ours.get(c, "-")}{theirs.get(c, "")}' for c in categories])
  ax.set_xlabel(f'{key} (size ratio: this sweep'
                f'{" | " + reference.get("label", "reference") if theirs else ""})')


def _finish(ax, xs: np.ndarray, ys: np.ndarray, categorical: bool, right: float = 0.3):
  """Grid, legend, and room for the point labels (a minimum span for single points)."""
  ax.grid(alpha=0.3)
  if xs.size == 0:
    return
  ax.legend(loc='best', fontsize=8)
  if categorical:
    xs = np.array([-0.3, max(xs.max(), 1) + 0.2])
  xspan = max(xs.max() - xs.min(), 0.2 * max(abs(xs.max()), 1e-3))
  yspan = max(ys.max() - ys.min(), 1.0)
  ax.set_xlim(xs.min() - 0.12 * xspan, xs.max() + right * xspan)
  ax.set_ylim(ys.min() - 0.3 * yspan, ys.max() + 0.3 * yspan)


def error_edf_figure(records: list[dict[str, Any]], keys: list[str], path: str,
                     declared: dict[str, Any] | None = None) -> str:
  """pycls: top-1 error EDFs with 95% bootstrap bands, one per value of the compared key
  (a declared design space's, else a varying key with few values), and error vs size.
  Two curves are compared by their KS distance and their mean-error difference."""
  plt = _plt()
  space = (declared or {}).get('design_space') or {}
  split = space.get('compare') or next(
      (k for k in keys if len({json.dumps(points.value(r, k)) for r in records}) <= 6), None)
  curves = collections.OrderedDict()
  for r in records:
    curves.setdefault(points.value(r, split) if split else 'all runs', []).append(r)
  if not space and min(len(runs) for runs in curves.values()) < EDF_MIN_RUNS:
    split, curves = None, {'all runs': records}  # an EDF of a few seeds says nothing
  fig, (ax, scatter) = plt.subplots(1, 2, figsize=(11.5, 4.6), constrained_layout=True)
  errors = {name: np.array([100 * (1 - r['top1']) for r in runs]) for name, runs in curves.items()}
  grid = np.linspace(min(e.min() for e in errors.values()) - 0.05,
                     max(e.max() for e in errors.values()) + 0.05, 200)
  for k, (name, e) in enumerate(errors.items()):
    color = f'C{k}'
    label = points.point_label({split: name}) if split else name
    s = np.sort(e)
    ax.step(np.concatenate([[grid[0]], s]), np.arange(len(s) + 1) / len(s), where='post',
            color=color, lw=1.6, label=f'{label} (n={len(s)}, mean error {e.mean():.2f}%)')
    lo, hi = stats.edf_band(e, grid, seed=k)
    ax.fill_between(grid, lo, hi, step='post', color=color, alpha=0.15, linewidths=0)
    runs = curves[name]
    scatter.scatter([r['size_mib'] for r in runs], e, s=14, color=color, alpha=0.7,
                    linewidths=0, label=label)
  comparison = ''
  if len(errors) == 2:
    (na, ea), (nb, eb) = curves.items()
    a, b, _ = findings.compared(records, {split: na}, {split: nb}, 'top1')
    c = stats.compare_spaces({k: 100 * (1 - v) for k, v in a.items()},
                             {k: 100 * (1 - v) for k, v in b.items()})
    i = c.mean_difference.interval
    name_of = lambda name: points.point_label({split: name})
    comparison = (f'\n{name_of(nb)} - {name_of(na)}: mean error '
                  f'{i.mean:+.2f} points, 95% bootstrap interval [{i.lo:+.2f}, {i.hi:+.2f}]'
                  f'{" (paired by model)" if c.mean_difference.paired else ""}; '
                  f'KS distance {c.ks:.2f} (p={c.ks_p:.2g})')
  ax.set_xlabel('top-1 error (%)')
  ax.set_ylabel('fraction of models with error <= x')
  ax.set_ylim(0, 1.02)
  ax.set_xlim(grid[0], grid[-1])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  ax.set_title('error EDF, 95% pointwise bootstrap bands', fontsize=9)
  scatter.set_xscale('log')
  scatter.set_xlabel('model size (MiB, float32; log scale)')
  scatter.set_ylabel('top-1 error (%)')
  scatter.grid(alpha=0.3)
  scatter.legend(fontsize=8)
  scatter.set_title('each model', fontsize=9)
  title = (declared or {}).get('title') or f'top-1 error over {len(records)} runs'
  caption = (declared or {}).get('caption') if space else None
  fig.suptitle(textwrap.fill(f'{title}; {points.context(records)}', 120)
               + (f'\n{textwrap.fill(caption, 120)}' if caption else '') + comparison,
               fontsize=9)
  return _save(fig, path)


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
    text += f' ± {100 * (g[metric + "_hi"] - g[metric]):.2f}'
  return text


def table(records: list[dict[str, Any]], failed: list[dict[str, Any]], keys: list[str],
          declared: dict[str, Any] | None = None) -> str:
  """Markdown: every design point (mean ± 95% t interval over seeds), reference numbers
  beside it, then the findings: the declared claims tested on these results."""
  declared = declared or {}
  reference = declared.get('reference') or {}
  paper_points = reference.get('points', []) if len(keys) == 1 else []
  label = reference.get('label', 'reference')
  header = [*keys, 'seeds', 'parameters', 'size (MiB)', 'MMACs', 'top-1 (%)', 'top-5 (%)',
            'wall (s)']
  if paper_points:
    header += [f'{label} top-1 (%)', f'{label} top-5 (%)', f'{label} size (MB)']
  lines = [f'Sweep: {points.context(records)}.' if records else 'Sweep: no finished runs.', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(keys) + ['--:'] * (len(header) - len(keys))) + '|']
  groups = points.group(records, keys)
  for g in groups:
    cells = [points.format_value(g[k]) for k in keys]
    cells += [str(len(g['runs'])), f'{g["params"]:,.0f}', f'{g["size_mib"]:.3f}',
              f'{g["macs"] / 1e6:.1f}' if g.get('macs') is not None else '',
              _pct(g, 'top1'), _pct(g, 'top5'),
              f'{g["wall_s"]:.0f}' if g.get('wall_s') is not None else '']
    if paper_points:
      p = next((p for p in paper_points if p['value'] == g[keys[0]]), {})
      cells += [f'{100 * p["top1"]:.1f}' if p.get('top1') is not None else '',
                f'{100 * p["top5"]:.1f}' if p.get('top5') is not None else '',
                f'{p["stated_mb"]:g}' if p.get('stated_mb') else '']
    lines.append('| ' + ' | '.join(cells) + ' |')
  if any(len(g['runs']) > 1 for g in groups):
    lines += ['', 'Top-1 and top-5: mean ± half-width of the 95% Student t interval over the '
              'seeds (t with seeds - 1 degrees of freedom).']
  if records and 'top5' not in metrics(records, declared):
    lines += ['', f'Top-5 is not drawn: of {records[0].get("num_classes")} classes, five '
              'guesses cover too many to tell networks apart.']
  if paper_points:
    note = (f'{label.capitalize()}: {reference.get("source", "")} (stated numbers only; '
            'blank = not stated).')
    if not points.in_setting(records, reference):
      note += ' This sweep\'s setting differs: compare shapes, not levels.'
    lines += ['', note]
  if failed:
    lines += ['', f'Failed points ({len(failed)}):', '']
    lines += [f'- `{r["name"]}`: {r.get("error", "")}' for r in failed]
  text = '\n'.join(lines) + '\n'
  found = findings.markdown(findings.test_claims(records, declared))
  return text + ('\n' + found if found else '')


# -- entry points ----------------------------------------------------------------------------


def make_report(workdir: str, edf_min_runs: int = EDF_MIN_RUNS,
                log: Callable[[str], None] | None = None) -> list[str]:
  """Writes table.md and the figures for a sweep directory; returns their paths.
  log: where the findings section is also written (`squeezejax report`: stdout)."""
  if os.path.exists(os.path.join(workdir, TABLE2_JSON)):
    return table2_report(workdir)
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
  text = table(ok, failed, keys, declared)
  files.write_atomic(written[0], text)
  if log and '## Findings' in text:
    log(text[text.index('## Findings'):].rstrip())
  space = declared.get('design_space')
  if ok and not space:
    name = declared.get('figure') or GENERIC_FIGURE
    written.append(size_accuracy_figure(ok, keys, os.path.join(workdir, name), declared))
  if len(ok) >= edf_min_runs or (ok and space):
    name = (space and declared.get('figure')) or 'error_edf.png'
    written.append(error_edf_figure(ok, keys, os.path.join(workdir, name), declared))
  return written


# -- Table 2: Deep Compression (experiments/table2_compression.py) ---------------------

TABLE2_JSON = table2.TABLE2_JSON


def table2_report(workdir: str) -> list[str]:
  """table2.md and table2.png (file size, log axis, vs top-1) from table2.json."""
  with open(os.path.join(workdir, TABLE2_JSON)) as f:
    record = json.load(f)
  md = os.path.join(workdir, 'table2.md')
  files.write_atomic(md, table2.markdown(record))
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
  for r in table2.rows(record):  # a legend, not labels: the compressed rows lie close
    ax.errorbar(r['bytes'] / 1024, r['top1'], yerr=[[r['top1'] - r['top1_min']],
                                                    [r['top1_max'] - r['top1']]],
                fmt='o', capsize=3, label=f'{r["row"]} ({r["label_mb"]:g}MB)')
  ax.set_xscale('log')
  ax.set_xlabel('file size (KiB, log scale)')
  ax.set_ylabel(f'top-1 accuracy (%): mean, min-max over {record["seeds"]} seed(s)')
  ax.legend(fontsize=7, loc='lower left')
  ax.set_title('Table 2 on Fashion-MNIST: AlexNet-small, SqueezeNet-small + Deep Compression',
               fontsize=10)
  return [md, _save(fig, os.path.join(workdir, 'table2.png'))]


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax report',
      description='Figures (PNG), a Markdown table and the findings (the experiment\'s '
                  'claims tested) from a sweep\'s results.jsonl.')
  parser.add_argument('--workdir', required=True, help='the sweep directory')
  parser.add_argument('--edf_min_runs', type=int, default=EDF_MIN_RUNS,
                      help='draw the error EDF from this many finished runs on')
  args = parser.parse_args(argv)
  for path in make_report(args.workdir, args.edf_min_runs, log=print):
    print(path)
  return 0
