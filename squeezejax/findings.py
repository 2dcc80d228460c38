"""A sweep's claims, tested: each declared claim's effect, interval, pairing and verdict.

An experiment file declares its claims in `get_report(arg)['claims']`:

  {'claim': 'accuracy rises from SR 0.125 to SR 0.75',
   'a': {'squeeze_ratio': 0.125}, 'b': {'squeeze_ratio': 0.75},  # which runs are compared
   'test': 'greater',        # b > a; 'at_most': b no better than a; 'at_least': b >= a
   'metric': 'top1',         # default
   'margin': 0.005}          # the smallest difference that matters (default: the
                             # declaration's 'margin', else 0.005 = half a point)

The effect is mean(b) - mean(a) of the metric. Runs of a and b are paired when they
agree on every varying key but the compared ones (the seed; in a sampled design space
the sampled metaparameters too), and `stats.verdict` decides the claim from the 95%
interval. Nothing here is hand-written: the findings are recomputed from results.jsonl
each time the report is drawn.
"""

from __future__ import annotations

import json
from typing import Any

from squeezejax import families
from squeezejax import spec as spec_lib
from squeezejax import stats
from squeezejax.errors import UserError

MARGIN = 0.005


def value(record: dict[str, Any], key: str):
  return record.get(key) if key in record else record.get('overrides', {}).get(key)


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


def select(records: list[dict[str, Any]], where: dict[str, Any]) -> list[dict[str, Any]]:
  return [r for r in records if all(value(r, k) == v for k, v in where.items())]


def by_pair_key(records: list[dict[str, Any]], keys: list[str], metric: str
                ) -> dict[str, float]:
  """{JSON of (the runs' values of `keys`, seed): metric}: what pairs runs of a and b."""
  return {json.dumps([[value(r, k) for k in keys], r.get('seed')]): r[metric]
          for r in records if r.get(metric) is not None}


def compared(records: list[dict[str, Any]], a: dict, b: dict, metric: str = 'top1'
             ) -> tuple[dict[str, float], dict[str, float], list[str]]:
  """The metric of a's and b's runs keyed for pairing, and the pairing keys."""
  keys = [k for k in varying(records) if k not in a and k not in b]
  return (by_pair_key(select(records, a), keys, metric),
          by_pair_key(select(records, b), keys, metric), keys)


def _where(where: dict[str, Any]) -> str:
  """{'squeeze_ratio': 0.75} -> 'SR 0.75'."""
  return ', '.join(f'{spec_lib.field_label(k.rsplit(".", 1)[-1])} '
                   f'{f"{v:g}" if isinstance(v, float) else v}' for k, v in where.items())


def test_claims(records: list[dict[str, Any]], declared: dict[str, Any]
                ) -> list[dict[str, Any]]:
  """Each declared claim with its effect (None when a side has no runs) and verdict."""
  out = []
  for claim in declared.get('claims', []):
    _check(claim)
    metric = claim.get('metric', 'top1')
    margin = claim.get('margin', declared.get('margin', MARGIN))
    a, b, keys = compared(records, claim['a'], claim['b'], metric)
    row = {'claim': claim['claim'], 'metric': metric, 'test': claim['test'], 'margin': margin,
           'a': claim['a'], 'b': claim['b'], 'effect': None, 'n_a': len(a), 'n_b': len(b)}
    if a and b:
      effect = stats.paired_effect(a, b)
      unit = 'seed' if not keys else 'model'
      row.update(effect=effect, verdict=stats.verdict(effect, claim['test'], margin),
                 unit=unit)
    else:
      missing = claim['a'] if not a else claim['b']
      row['verdict'] = f'not tested: no finished runs with {_where(missing)}'
    out.append(row)
  return out


def check(declared: dict[str, Any] | None) -> None:
  """Refuses a report declaration whose claims cannot be tested (before a sweep runs)."""
  for claim in (declared or {}).get('claims', []):
    _check(claim)


def _check(claim) -> None:
  """A declared claim names its runs (a, b as {key: value}), a known test and metric."""
  name = claim.get('claim') if isinstance(claim, dict) else None
  if not isinstance(name, str) or not all(isinstance(claim.get(k), dict) and claim[k]
                                          for k in ('a', 'b')):
    raise UserError(f'claim {claim!r} is not allowed: expected a dict with claim (text), '
                    'a and b ({key: value} of the runs compared) and test')
  if claim.get('test') not in stats.TESTS:
    raise UserError(f'claim {name!r}: test={claim.get("test")!r} is not allowed: expected '
                    f'one of {", ".join(stats.TESTS)}')
  if claim.get('metric', 'top1') not in ('top1', 'top5'):
    raise UserError(f'claim {name!r}: metric={claim["metric"]!r} is not allowed: expected '
                    'top1 or top5')


def _pp(x: float) -> str:
  return f'{100 * x:+.2f}'


def markdown(rows: list[dict[str, Any]]) -> str:
  """The 'Findings' section of table.md (also printed by `squeezejax report`)."""
  if not rows:
    return ''
  lines = ['## Findings', '',
           '| claim | compared (b vs a) | effect b - a (points) | 95% interval | n | verdict |',
           '|---|---|--:|--:|---|---|']
  for row in rows:
    pair = f'{_where(row["b"])} vs {_where(row["a"])}'
    effect = row['effect']
    if effect is None:
      lines.append(f'| {row["claim"]} | {pair} |  |  |  | {row["verdict"]} |')
      continue
    i = effect.interval
    n = (f'{i.n} {row["unit"]}{"s" * (i.n != 1)}, paired' if effect.paired else
         f'{effect.n_a} + {effect.n_b} runs, unpaired')
    interval = f'[{_pp(i.lo)}, {_pp(i.hi)}]' if i.known else 'none (one run a side)'
    verdict = row['verdict']
    if verdict == stats.INCONCLUSIVE:
      verdict += f' at {i.n} {row["unit"]}{"s" * (i.n != 1)}'
    lines.append(f'| {row["claim"]} | {pair} | {_pp(effect.value)} | {interval} | {n} | '
                 f'**{verdict}** |')
  margins = sorted({row['margin'] for row in rows})
  lines += ['', f'Effects are differences of mean {rows[0]["metric"].replace("top", "top-")} '
            'accuracy in percentage points. Runs are paired when they share the seed (and '
            'any other varying setting); the interval is then a 95% Student t interval of '
            'the paired differences, else Welch\'s. greater: supported if the interval lies '
            'above 0, not supported if it lies below the margin; at_most (no better): '
            'supported if it lies below the margin, not supported if above; at_least: '
            'supported if above minus the margin, not supported if below. Margin: '
            + ', '.join(f'{100 * m:g}' for m in margins) + ' points.']
  return '\n'.join(lines) + '\n'
