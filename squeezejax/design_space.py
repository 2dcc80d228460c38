"""Sampled design spaces (pycls): N points drawn from distributions over metaparameters.

  space = {'squeeze_ratio': LogUniform(0.125, 1.0), 'pct_3x3': Uniform(0.1, 0.9),
           'base_e': IntRange(16, 48), 'incr_e': IntRange(0, 48), 'freq': IntRange(1, 4)}
  models = sample(space, 40, seed=0, base=fields, image_size=28,
                  cross={'bypass': ('none', 'simple')}, max_params=250_000)
  get_sweep = lambda arg: overrides(models, cross={'bypass': ('none', 'simple')})

A design space is compared by the distribution of its models' errors, not by one model
(Radosavovic et al. 2019). Sampling is seeded and reproducible: every draw is a
uniform double from numpy's PCG64 bit stream, transformed here. A drawn point is kept
only if every variant of `cross` is a valid network (SqueezeNetSpec validates it: a
simple bypass needs equal input and output channels) within the parameter and MAC
budget, both computed in closed form (`SqueezeNetSpec.cost`) before anything trains.
Crossing every sampled model with each variant pairs the variants model by model.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import Any, Sequence

import numpy as np

from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

DIGITS = 3  # significant digits of a sampled real (names and JSON stay readable)


def _round(x: float) -> float:
  return float(f'{x:.{DIGITS}g}')


@dataclasses.dataclass(frozen=True)
class LogUniform:
  low: float
  high: float

  def draw(self, u: float) -> float:
    return _round(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))


@dataclasses.dataclass(frozen=True)
class Uniform:
  low: float
  high: float

  def draw(self, u: float) -> float:
    return _round(self.low + u * (self.high - self.low))


@dataclasses.dataclass(frozen=True)
class IntRange:
  """An integer uniform in [low, high], both included."""
  low: int
  high: int

  def draw(self, u: float) -> int:
    return int(self.low + min(math.floor(u * (self.high - self.low + 1)), self.high - self.low))


@dataclasses.dataclass(frozen=True)
class Choice:
  values: tuple

  def draw(self, u: float):
    return self.values[min(math.floor(u * len(self.values)), len(self.values) - 1)]


def describe(space: dict[str, Any]) -> str:
  """'SR log-uniform [0.125, 1], 3x3 uniform [0.1, 0.9], base_e integer [16, 48]'."""
  def one(d):
    if isinstance(d, LogUniform):
      return f'log-uniform [{d.low:g}, {d.high:g}]'
    if isinstance(d, Uniform):
      return f'uniform [{d.low:g}, {d.high:g}]'
    if isinstance(d, IntRange):
      return f'integer [{d.low}, {d.high}]'
    return f'one of {", ".join(map(str, d.values))}'
  return ', '.join(f'{spec_lib.field_label(k)} {one(d)}' for k, d in space.items())


def sample(space: dict[str, Any], n: int, seed: int = 0, *, base: dict[str, Any],
           image_size: int | None = None, cross: dict[str, Sequence] | None = None,
           max_params: int | None = None, max_macs: int | None = None,
           max_draws: int | None = None) -> list[dict[str, Any]]:
  """n distinct metaparameter dicts (the keys of `space`), each valid and within budget
  for every combination of `cross` on top of `base` (the experiment's spec fields)."""
  unknown = [k for k in (*space, *(cross or {})) if k not in spec_lib.METAPARAMETERS]
  if unknown:
    raise UserError(f'design space key {unknown[0]!r} is not allowed: expected one of '
                    f'{", ".join(spec_lib.METAPARAMETERS)}')
  if n < 1:
    raise UserError(f'design space size n={n}: expected an integer >= 1')
  variants = [dict(zip(cross, v)) for v in itertools.product(*cross.values())] if cross else [{}]
  rng = np.random.default_rng(seed)
  keys = list(space)
  out, seen, draws = [], set(), 0
  max_draws = max_draws or 1000 * n
  while len(out) < n:
    if draws >= max_draws:
      raise UserError(f'the design space gave {len(out)} of {n} valid points in {draws} '
                      'draws: widen it or relax max_params / max_macs')
    draws += 1
    u = rng.random(len(keys))  # one uniform per key, in the space's order
    point = {k: space[k].draw(float(x)) for k, x in zip(keys, u)}
    key = json.dumps(point, sort_keys=True)
    if key in seen or not all(_admits({**base, **point, **v}, image_size, max_params,
                                      max_macs) for v in variants):
      continue
    seen.add(key)
    out.append(point)
  return out


def _admits(fields: dict[str, Any], image_size, max_params, max_macs) -> bool:
  try:
    cost = spec_lib.SqueezeNetSpec(**fields).cost(image_size)
  except UserError:  # not a network (a simple bypass across a channel change)
    return False
  return ((max_params is None or cost['params'] <= max_params)
          and (max_macs is None or cost['macs'] <= max_macs))


def overrides(models: list[dict[str, Any]], cross: dict[str, Sequence] | None = None,
              prefix: str = 'spec.') -> list[dict[str, Any]]:
  """A sweep grid: each model (model-major) with each variant of `cross`, as config keys."""
  variants = [dict(zip(cross, v)) for v in itertools.product(*cross.values())] if cross else [{}]
  return [{f'{prefix}{k}': v for k, v in {**m, **variant}.items()}
          for m in models for variant in variants]
