"""`squeezejax summary`: the paper's Table 1 for any point of any family's design space.

  squeezejax summary --model=squeezenext_1.0_23 --json     one preset, every layer
  squeezejax summary --list                                every preset and its cost
"""

from __future__ import annotations

import json

from squeezejax import cli, configs, families


def table(spec, image_size: int | None = None) -> str:
  """A Table-1-like Markdown table with totals (columns without values are left out)."""
  rows = spec.layers(image_size)
  cost = spec.cost(image_size)
  show = lambda v: '' if v is None else f'{v:,}'
  columns = [c for c in ('s1x1', 'e1x1', 'e3x3') if any(getattr(r, c) is not None for r in rows)]
  bypass = any(r.bypass not in ('', 'none') for r in rows)
  head = ['layer', 'output size', 'filter/stride', *columns] + (['bypass'] if bypass else [])
  lines = ['| ' + ' | '.join(head + ['parameters', 'MACs']) + ' |',
           '|' + '---|' * 3 + '--:|' * len(columns) + ('---|' if bypass else '') + '--:|--:|']
  for r in rows:
    h, w, c = r.output
    cells = [r.name, f'{h}x{w}x{c}', r.kernel, *(show(getattr(r, k)) for k in columns)]
    if bypass:
      cells.append(r.bypass if r.bypass not in ('', 'none') else '')
    lines.append('| ' + ' | '.join(cells + [show(r.params or None), show(r.macs or None)]) + ' |')
  total = ['**total**'] + [''] * (len(head) - 1) + [f'**{cost["params"]:,}**',
                                                    f'**{cost["macs"]:,}**']
  lines.append('| ' + ' | '.join(total) + ' |')
  lines += [
      '',
      f'{describe(spec)}; input {cost["image_size"]}x{cost["image_size"]}x{spec.in_channels}',
      f'parameters {cost["params"]:,}; size {cost["size_mib"]:.2f} MiB at float32 '
      f'(paper label {cost["size_label_mb"]:g}MB); {cost["macs"] / 1e9:.3f} GMACs; '
      f'activations {cost["activation_bytes"] / 2**20:.1f} MiB per image',
  ]
  return '\n'.join(lines)


def describe(spec) -> str:
  return spec.describe()


def as_json(spec, image_size: int | None = None) -> dict:
  cost = spec.cost(image_size)
  layers = [
      {'name': r.name, 'kind': r.kind, 'output': list(r.output), 'kernel': r.kernel,
       's1x1': r.s1x1, 'e1x1': r.e1x1, 'e3x3': r.e3x3, 'bypass': r.bypass or None,
       'params': r.params, 'macs': r.macs}
      for r in spec.layers(image_size)]
  return {'spec': spec.to_dict(), **cost, 'layers': layers}


def listing_table() -> str:
  lines = ['| model | family | parameters | MiB | GMACs | input |', '|---|---|--:|--:|--:|--:|']
  for r in families.listing():
    lines.append(f'| {r["model"]} | {r["family"]} | {r["params"]:,} | {r["size_mib"]:.2f} | '
                 f'{r["macs"] / 1e9:.3f} | {r["image_size"]} |')
  return '\n'.join(lines)


def _flag_type(kind):
  if kind is tuple:  # --depths=6,6,8,1
    def integers(text: str) -> tuple[int, ...]:
      return tuple(int(v) for v in text.strip('()[] ').split(',') if v.strip())
    integers.__name__ = 'list of integers'
    return integers
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
                      help=f'preset: {", ".join(families.PRESETS)}')
  parser.add_argument('--list', action='store_true', help='list every preset and its cost')
  hints = families.field_types()
  for name, kind in hints.items():  # every field of every family is a flag
    parser.add_argument(f'--{name}', type=_flag_type(kind), default=None)
  parser.add_argument('--image_size', type=int, default=None,
                      help="square input side (default: the preset's, e.g. 224 or 32)")
  parser.add_argument('--json', action='store_true', help='print one JSON object')
  parser.add_argument('--checkpoint', default=None,
                      help='a compressed model directory: its Deep Compression size table')
  args = parser.parse_args(argv)
  if args.list:
    rows = families.listing()
    print(json.dumps(rows, indent=1) if args.json else listing_table())
    return 0
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
