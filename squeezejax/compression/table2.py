"""Table 2 (experiments/table2_compression.py): its rows and Markdown from table2.json;
`squeezejax report` draws its figure."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

TABLE2_JSON = 'table2.json'
ALEXNET, SQUEEZENET = 'AlexNet-small', 'SqueezeNet-small'


def rows(record: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per model or compression stage: top-1 mean/min/max over seeds, its change
  from SqueezeNet-small paired by seed, mean bytes, the label, and the reductions."""
  by_row = collections.OrderedDict()
  for r in record['rows']:
    by_row.setdefault(r['row'], []).append(r)

  def mean_of(name, key):
    return float(np.mean([r[key] for r in by_row[name]])) if name in by_row else np.nan

  squeezenet_top1 = {r['seed']: r['top1'] for r in by_row.get(SQUEEZENET, [])}
  out = []
  for name, rs in by_row.items():
    top1 = np.array([r['top1'] for r in rs]) * 100
    paired = [100 * (r['top1'] - squeezenet_top1[r['seed']]) for r in rs
              if r['seed'] in squeezenet_top1]
    nbytes = float(np.mean([r['bytes'] for r in rs]))
    out.append({'row': name, 'seeds': len(rs), 'top1': top1.mean(), 'top1_min': top1.min(),
                'top1_max': top1.max(),
                'delta_top1': float(np.mean(paired)) if paired else np.nan,
                'bytes': nbytes, 'label_mb': rs[0]['label_mb'],
                'density': rs[0].get('density', 1.0),
                'vs_alexnet_label': mean_of(ALEXNET, 'label_mb') / rs[0]['label_mb'],
                'vs_alexnet_bytes': mean_of(ALEXNET, 'bytes') / nbytes,
                'reduction': mean_of(SQUEEZENET, 'bytes') / nbytes})
  return out


def _x(value: float) -> str:
  return '' if np.isnan(value) else f'{value:.1f}x'


def markdown(record: dict[str, Any]) -> str:
  lines = [f'Table 2 on Fashion-MNIST ({record["seeds"]} seed(s); density {record["density"]}; '
           f'AlexNet {record.get("alexnet_steps", "-")} steps, SqueezeNet '
           f'{record["base_steps"]} steps, retraining {record["retrain_steps"]} x '
           f'{record.get("prune_iterations", 2)}, '
           f'centroid fine-tuning {record["share_steps"]})', '',
           '| model | weights kept | top-1 (%) mean [min, max] | change vs SqueezeNet '
           '(points, paired) | file (bytes) | MB (paper label) | vs AlexNet (labels) '
           '| vs AlexNet (bytes) | vs float32 SqueezeNet (bytes) |',
           '|---|--:|--:|--:|--:|--:|--:|--:|--:|']
  names = [r['row'] for r in record['rows']]
  if ALEXNET not in names:
    lines.append(f'| {ALEXNET} | | not run | | | | | | |')
  for r in rows(record):
    kept = '' if r['density'] is None else f'{100 * r["density"]:.1f}%'
    delta = '' if np.isnan(r['delta_top1']) or r['row'] == SQUEEZENET else (
        f'{r["delta_top1"]:+.2f}')
    lines.append(f'| {r["row"]} | {kept} | {r["top1"]:.2f} [{r["top1_min"]:.2f}, '
                 f'{r["top1_max"]:.2f}] | {delta} | {r["bytes"]:,.0f} | {r["label_mb"]:g} | '
                 f'{_x(r["vs_alexnet_label"])} | {_x(r["vs_alexnet_bytes"])} | '
                 f'{_x(r["reduction"])} |')
  lines += ['', 'ImageNet scale (sizes only): the paper labels AlexNet 240MB; reductions by '
            'label (as the paper computes them) and by bytes', '',
            '| model | bytes | MB (label) | vs AlexNet (labels) | vs AlexNet (bytes) |',
            '|---|--:|--:|--:|--:|']
  for r in record['imagenet']:
    lines.append(f'| {r["row"]} | {r["bytes"]:,} | {r["label_mb"]:g} | '
                 f'{r["vs_alexnet_label"]:.1f}x | {r["vs_alexnet_bytes"]:.1f}x |')
  return '\n'.join(lines) + '\n'
