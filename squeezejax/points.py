"""Sweep records grouped into design points: per point the mean over seeds with its
95% t interval, and the labels tables and figures give a point."""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np

from squeezejax import families
from squeezejax import findings
from squeezejax import spec as spec_lib
from squeezejax import stats

TOP5_MIN_CLASSES = 20


varying = findings.varying
value = findings.value


def numeric(values) -> bool:
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def group(records: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
  """Runs of the same design point (different seeds) -> per metric the mean, its 95%
  t interval over seeds (`_lo`, `_hi`), min and max."""
  groups = collections.OrderedDict()
  for r in records:
    groups.setdefault(tuple(json.dumps(value(r, k)) for k in keys), []).append(r)
  out = []
  for runs in groups.values():
    g = {k: value(runs[0], k) for k in keys}
    g['runs'] = runs
    for metric in ('top1', 'top5', 'size_mib', 'params', 'macs', 'wall_s'):
      values = np.array([r[metric] for r in runs if r.get(metric) is not None], float)
      g[metric] = float(values.mean()) if values.size else None
      if values.size:
        interval = stats.mean_interval(values)
        g[metric + '_lo'], g[metric + '_hi'] = interval.lo, interval.hi
        g[metric + '_min'], g[metric + '_max'] = float(values.min()), float(values.max())
    out.append(g)
  # Numeric sweeps read left to right by their value; categorical ones keep sweep order.
  if len(keys) == 1 and numeric(g[keys[0]] for g in out):
    out.sort(key=lambda g: g[keys[0]])
  return out


def metrics(records: list[dict[str, Any]], declared: dict[str, Any] | None = None
            ) -> tuple[str, ...]:
  """What the figures draw: top-1, and top-5 only where it is not saturated by few
  classes (on 10 classes five guesses saturate it); a declaration's 'metrics' wins."""
  if (declared or {}).get('metrics'):
    return tuple(declared['metrics'])
  classes = [r.get('num_classes') or 0 for r in records]
  return ('top1', 'top5') if classes and min(classes) >= TOP5_MIN_CLASSES else ('top1',)


def format_value(value) -> str:
  return f'{value:g}' if isinstance(value, float) else str(value)


def point_label(values: dict[str, Any]) -> str:
  """'SR 0.125, bypass simple': each key's short name and value."""
  parts = [f'{spec_lib.field_label(k.rsplit(".", 1)[-1])} {format_value(v)}'
           for k, v in values.items()]
  return ', '.join(parts) or 'base'


def context(records: list[dict[str, Any]]) -> str:
  """'fashion_mnist, layout small, base_e 32, ..., 300 steps' (what the runs share)."""
  r = records[0]
  parts = [str(r.get('dataset'))]
  for key in families.METAPARAMETERS:
    if r.get(key) is not None and len({json.dumps(x.get(key)) for x in records}) == 1:
      parts.append(f'{key} {format_value(r[key])}')
  steps = {x.get('steps') for x in records}
  if len(steps) == 1 and None not in steps:
    parts.append(f'{steps.pop():,} steps')
  return ', '.join(parts)


def in_setting(records: list[dict[str, Any]], reference: dict[str, Any]) -> bool:
  """Whether every run was made in the reference's setting (then they share the axes)."""
  setting = reference.get('setting', {})
  return all(r.get(k) == v for r in records for k, v in setting.items())


def seeds_label(groups) -> str:
  counts = sorted({len(g['runs']) for g in groups})
  n = '-'.join(str(c) for c in (counts[0], counts[-1]) if c) if len(counts) > 1 else counts[0]
  return f'n={n} seed{"s" * (counts[-1] > 1)}'
