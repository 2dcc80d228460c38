"""Table 2 (experiments/table2_compression.py): its rows and Markdown from table2.json;
`squeezejax report` draws its figure."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

TABLE2_JSON = 'table2.json'


def rows(record: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per compression stage: top-1 mean/min/max over seeds, mean bytes, label."""
  by_row = collections.OrderedDict()
  for r in record['rows']:
    by_row.setdefault(r['row'], []).append(r)
  base = np.mean([r['bytes'] for r in by_row.get('SqueezeNet-small', [{'bytes': np.nan}])])
  out = []
  for name, rs in by_row.items():
    top1 = np.array([r['top1'] for r in rs]) * 100
    nbytes = float(np.mean([r['bytes'] for r in rs]))
    out.append({'row': name, 'seeds': len(rs), 'top1': top1.mean(), 'top1_min': top1.min(),
                'top1_max': top1.max(), 'bytes': nbytes, 'label_mb': rs[0]['label_mb'],
                'density': rs[0].get('density', 1.0), 'reduction': base / nbytes})
  return out


def markdown(record: dict[str, Any]) -> str:
  lines = [f'Table 2 on Fashion-MNIST ({record["seeds"]} seed(s); density {record["density"]}; '
           f'base {record["base_steps"]} steps, retraining {record["retrain_steps"]} x '
           f'{record.get("prune_iterations", 2)}, '
           f'centroid fine-tuning {record["share_steps"]})', '',
           '| model | weights kept | top-1 (%) mean [min, max] | file (bytes) | MB (paper label) '
           '| vs float32 SqueezeNet (bytes) |', '|---|--:|--:|--:|--:|--:|',
           '| AlexNet-small | | not run (needs the AlexNet family) | | | |']
  for r in rows(record):
    kept = '' if r['density'] is None else f'{100 * r["density"]:.1f}%'
    lines.append(f'| {r["row"]} | {kept} | {r["top1"]:.2f} [{r["top1_min"]:.2f}, '
                 f'{r["top1_max"]:.2f}] | {r["bytes"]:,.0f} | {r["label_mb"]:g} | '
                 f'{r["reduction"]:.1f}x |')
  lines += ['', 'ImageNet scale (sizes only): the paper labels AlexNet 240MB; reductions by '
            'label (as the paper computes them) and by bytes', '',
            '| model | bytes | MB (label) | vs AlexNet (labels) | vs AlexNet (bytes) |',
            '|---|--:|--:|--:|--:|']
  for r in record['imagenet']:
    lines.append(f'| {r["row"]} | {r["bytes"]:,} | {r["label_mb"]:g} | '
                 f'{r["vs_alexnet_label"]:.1f}x | {r["vs_alexnet_bytes"]:.1f}x |')
  return '\n'.join(lines) + '\n'
