"""`squeezejax summary`: the paper's Table 1 for any point of the design space."""

from __future__ import annotations

import json

from squeezejax import flags
from squeezejax import spec as spec_lib


def table(spec: spec_lib.SqueezeNetSpec, image_size: int | None = None) -> str:
  """A Table-1-like Markdown table with totals."""
  rows = spec.layers(image_size)
  cost = spec.cost(image_size)
  show = lambda v: '' if v is None else f'{v:,}'
  lines = [
      '| layer | output size | filter/stride | s1x1 | e1x1 | e3x3 | bypass | parameters | MACs |',
      '|---|---|---|--:|--:|--:|---|--:|--:|',
  ]
  for r in rows:
    h, w, c = r.output
    lines.append(
        f'| {r.name} | {h}x{w}x{c} | {r.kernel} | {show(r.s1x1)} | {show(r.e1x1)} | '
        f'{show(r.e3x3)} | {r.bypass if r.bypass not in ("", "none") else ""} | '
        f'{show(r.params or None)} | {show(r.macs or None)} |')
  lines.append(
      f'| **total** | | | | | | | **{cost["params"]:,}** | **{cost["macs"]:,}** |')
  lines += [
      '',
      f'{describe(spec)}; input {cost["image_size"]}x{cost["image_size"]}x{spec.in_channels}',
      f'parameters {cost["params"]:,}; size {cost["size_mib"]:.2f} MiB at float32 '
      f'(paper label {cost["size_label_mb"]:g}MB); {cost["macs"] / 1e9:.3f} GMACs; '
      f'activations {cost["activation_bytes"] / 2**20:.1f} MiB per image',
  ]
  return '\n'.join(lines)


def describe(spec: spec_lib.SqueezeNetSpec) -> str:
  return (f'layout {spec.layout}, base_e {spec.base_e}, incr_e {spec.incr_e}, '
          f'pct_3x3 {spec.pct_3x3:g}, freq {spec.freq}, squeeze_ratio '
          f'{spec.squeeze_ratio:g}, bypass {spec.bypass}, {spec.num_classes} classes')


def as_json(spec: spec_lib.SqueezeNetSpec, image_size: int | None = None) -> dict:
  cost = spec.cost(image_size)
  layers = [
      {'name': r.name, 'kind': r.kind, 'output': list(r.output), 'kernel': r.kernel,
       's1x1': r.s1x1, 'e1x1': r.e1x1, 'e3x3': r.e3x3, 'bypass': r.bypass or None,
       'params': r.params, 'macs': r.macs}
      for r in spec.layers(image_size)]
  return {'spec': spec.to_dict(), **cost, 'layers': layers}


SPEC_FLAGS = {
    'layout': str, 'base_e': int, 'incr_e': int, 'pct_3x3': float, 'freq': int,
    'squeeze_ratio': float, 'bypass': str, 'num_classes': int, 'in_channels': int,
    'dropout_rate': float, 'init': str,
}


def main(argv: list[str]) -> int:
  parser = flags.ArgumentParser(
      prog='squeezejax summary',
      description='Per-layer channels, parameters and MACs (the paper\'s Table 1).')
  parser.add_argument('--model', default='squeezenet1_0',
                      help=f'preset: {", ".join(spec_lib.PRESETS)}')
  for name, kind in SPEC_FLAGS.items():
    parser.add_argument(f'--{name}', type=kind, default=None)
  parser.add_argument('--image_size', type=int, default=None,
                      help='square input side (default: 224, or 32 for the small layout)')
  parser.add_argument('--json', action='store_true', help='print one JSON object')
  args = parser.parse_args(argv)
  overrides = {k: getattr(args, k) for k in SPEC_FLAGS if getattr(args, k) is not None}
  spec = spec_lib.preset(args.model, **overrides)
  if args.json:
    print(json.dumps(as_json(spec, args.image_size), indent=1))
  else:
    print(table(spec, args.image_size))
  return 0
