"""`squeezejax summary`: the paper's Table 1 for any point of the design space."""

from __future__ import annotations

import json
import typing

from squeezejax import cli, configs
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


def _flag_type(kind):
  if kind is not bool:
    return kind

  def boolean(text: str) -> bool:
    if text.lower() not in ('true', 'false'):
      raise ValueError(text)
    return text.lower() == 'true'
  boolean.__name__ = 'bool'  # argparse names the type in its error
  return boolean


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax summary',
      description='Per-layer channels, parameters and MACs (the paper\'s Table 1).')
  parser.add_argument('--model', default='squeezenet1_0',
                      help=f'preset: {", ".join(spec_lib.PRESETS)}')
  hints = typing.get_type_hints(spec_lib.SqueezeNetSpec)
  for name in spec_lib.METAPARAMETERS:  # every spec field is a flag
    parser.add_argument(f'--{name}', type=_flag_type(hints[name]), default=None)
  parser.add_argument('--image_size', type=int, default=None,
                      help='square input side (default: 224, or 32 for the small layout)')
  parser.add_argument('--json', action='store_true', help='print one JSON object')
  parser.add_argument('--checkpoint', default=None,
                      help='a compressed model directory: its Deep Compression size table')
  args = parser.parse_args(argv)
  if args.checkpoint:
    from squeezejax.compression import compress  # pylint: disable=g-import-not-at-top
    print(compress.summary_table(args.checkpoint))
    return 0
  config = configs.base_config()
  config.model = args.model
  configs.apply_overrides(config, {f'spec.{k}': getattr(args, k) for k in configs.spec_keys()
                                   if getattr(args, k) is not None})
  spec = configs.spec_from_config(config, num_classes=args.num_classes,
                                  in_channels=args.in_channels)
  if args.json:
    print(json.dumps(as_json(spec, args.image_size), indent=1))
  else:
    print(table(spec, args.image_size))
  return 0
