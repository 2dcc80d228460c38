"""Statistics for sweeps: means over seeds with 95% intervals, paired effects, verdicts,
EDFs with bootstrap bands, and two design spaces compared (numpy only).

Intervals over seeds are Student t intervals by default: with 3 seeds a bootstrap has
only 10 distinct resamples and its percentile interval is far too narrow. Bootstraps
(seeded, so a report redraws identically) are for EDF bands and for comparing design
spaces of tens of models. An effect is `b - a` of a metric; records of `a` and `b` are
paired when they share every key that is not compared (the seed, and in a sampled
design space the sampled metaparameters), so seed-to-seed noise that both share cancels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

LEVEL = 0.95
BOOTSTRAPS = 2000
TESTS = ('greater', 'at_most', 'at_least')  # b - a > 0, <= margin, >= -margin
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = 'supported', 'not supported', 'inconclusive'


# -- Student t --------------------------------------------------------------------------


def _t_cdf(x: float, df: float) -> float:
  """P(T <= x) for x >= 0: the density integrated by Simpson's rule (accurate to ~1e-9
  for the quantiles used here)."""
  c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
  n = 2000
  grid = np.linspace(0.0, x, n + 1)
  f = c * (1 + grid**2 / df) ** (-(df + 1) / 2)
  weights = np.ones(n + 1)
  weights[1:-1:2], weights[2:-1:2] = 4, 2
  return 0.5 + float(f @ weights) * x / (3 * n)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
  """The p-quantile (p > 0.5) of Student's t with `df` degrees of freedom (bisection)."""
  if not 0.5 < p < 1 or not df > 0:
    raise ValueError(f't_quantile(p={p}, df={df}): expected 0.5 < p < 1 and df > 0')
  lo, hi = 0.0, 1.0
  while _t_cdf(hi, df) < p:
    lo, hi = hi, 2 * hi
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
  return (lo + hi) / 2


# -- intervals --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean with its two-sided interval; lo = hi = mean with one value (no spread known)."""
  mean: float
  lo: float
  hi: float
  n: int
  method: str  # 't' or 'bootstrap'

  @property
  def known(self) -> bool:
    return self.n > 1


def mean_interval(values: Sequence[float], level: float = LEVEL, method: str = 't',
                  bootstraps: int = BOOTSTRAPS, seed: int = 0) -> Interval:
  """The mean of `values` and its `level` interval: Student t, or a percentile bootstrap."""
  x = np.asarray(values, float)
  if x.size == 0:
    raise ValueError('mean_interval of no values')
  mean = float(x.mean())
  if x.size == 1:
    return Interval(mean, mean, mean, 1, method)
  if method == 't':
    half = t_quantile((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, x.size, 't')
  if method == 'bootstrap':
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (bootstraps, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean, float(lo), float(hi), x.size, 'bootstrap')
  raise ValueError(f'method={method!r}: expected t or bootstrap')


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
  """mean(b) - mean(a) for unpaired samples, Welch's t interval (unequal variances)."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  diff = float(b.mean() - a.mean())
  if a.size < 2 or b.size < 2:
    return Interval(diff, diff, diff, 1, 'welch t')
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  se = math.sqrt(va + vb)
  if se == 0:
    return Interval(diff, diff, diff, min(a.size, b.size), 'welch t')
  df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
  half = t_quantile((1 + level) / 2, df) * se
  return Interval(diff, diff - half, diff + half, min(a.size, b.size), 'welch t')


# -- effects and verdicts --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Effect:
  """b - a, its interval, and whether it was paired (n = pairs, else the smaller group)."""
  interval: Interval
  paired: bool
  n_a: int
  n_b: int

  @property
  def value(self) -> float:
    return self.interval.mean


def paired_effect(a: dict, b: dict, level: float = LEVEL, method: str = 't',
                  seed: int = 0) -> Effect:
  """b - a from {pairing key: value} dicts (the key: seed, or seed and sampled point).

  With at least two keys in both, the differences of matched keys are averaged
  (paired); otherwise the groups' means are compared unpaired (Welch).
  """
  common = [k for k in a if k in b]
  if len(common) >= 2:
    diffs = [b[k] - a[k] for k in common]
    return Effect(mean_interval(diffs, level, method, seed=seed), True, len(a), len(b))
  return Effect(welch_interval(list(a.values()), list(b.values()), level), False,
                len(a), len(b))


def relative_change(a: dict, b: dict, level: float = LEVEL, seed: int = 0) -> Effect:
  """b / a - 1 (e.g. of error rates) from {pairing key: value} dicts: the mean of the
  matched ratios with a t interval (paired), else the ratio of the means with a
  percentile bootstrap of each group."""
  common = [k for k in a if k in b]
  if len(common) >= 2:
    ratios = [b[k] / a[k] - 1 for k in common]
    return Effect(mean_interval(ratios, level), True, len(a), len(b))
  x, y = np.asarray(list(a.values()), float), np.asarray(list(b.values()), float)
  mean = float(y.mean() / x.mean() - 1)
  if x.size < 2 or y.size < 2:
    return Effect(Interval(mean, mean, mean, 1, 'bootstrap'), False, x.size, y.size)
  rng = np.random.default_rng(seed)
  ratios = (y[rng.integers(0, y.size, (BOOTSTRAPS, y.size))].mean(1)
            / x[rng.integers(0, x.size, (BOOTSTRAPS, x.size))].mean(1) - 1)
  lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
  return Effect(Interval(mean, float(lo), float(hi), min(x.size, y.size), 'bootstrap'), False,
                x.size, y.size)


def verdict(effect: Effect, test: str, margin: float = 0.0) -> str:
  """Whether the interval of b - a decides the claim.

  greater:  b > a.   supported if the interval lies above 0; not supported if it lies
            below `margin` (it rules out a gain of `margin` or more).
  at_most:  b is no better than a (by more than `margin`): supported if the interval
            lies below `margin`; not supported if it lies above it.
  at_least: b is at least as good as a (within `margin`): supported if the interval
            lies above -margin; not supported if it lies below it.
  Anything else, and any effect from one run per side, is inconclusive.
  """
  if test not in TESTS:
    raise ValueError(f'test={test!r}: expected one of {", ".join(TESTS)}')
  lo, hi = effect.interval.lo, effect.interval.hi
  if not effect.interval.known:
    return INCONCLUSIVE
  if test == 'greater':
    return SUPPORTED if lo > 0 else NOT_SUPPORTED if hi < margin else INCONCLUSIVE
  if test == 'at_most':
    return SUPPORTED if hi <= margin else NOT_SUPPORTED if lo > margin else INCONCLUSIVE
  return SUPPORTED if lo >= -margin else NOT_SUPPORTED if hi < -margin else INCONCLUSIVE


# -- distributions ------------------------------------------------------------------------


def edf(samples: Sequence[float], at: Sequence[float]) -> np.ndarray:
  """The empirical distribution function of `samples` at `at`: fraction <= x."""
  s = np.sort(np.asarray(samples, float))
  return np.searchsorted(s, np.asarray(at, float), side='right') / s.size


def edf_band(samples: Sequence[float], at: Sequence[float], level: float = LEVEL,
             bootstraps: int = BOOTSTRAPS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Pointwise percentile-bootstrap band of the EDF at `at` (resampling the models)."""
  s = np.asarray(samples, float)
  rng = np.random.default_rng(seed)
  resampled = np.sort(s[rng.integers(0, s.size, (bootstraps, s.size))], axis=1)
  at = np.asarray(at, float)
  curves = np.stack([np.searchsorted(r, at, side='right') for r in resampled]) / s.size
  lo, hi = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
  return lo, hi


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
  """Kolmogorov-Smirnov distance: the largest gap between the two EDFs."""
  at = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
  return float(np.max(np.abs(edf(a, at) - edf(b, at))))


def ks_pvalue(d: float, n: int, m: int) -> float:
  """Asymptotic two-sample KS p-value (Kolmogorov's series, Stephens' correction)."""
  ne = n * m / (n + m)
  lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
  if lam < 1e-3:
    return 1.0
  p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
  return min(1.0, max(0.0, p))


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Two design spaces' errors: the KS distance, and mean(b) - mean(a) with its interval."""
  ks: float
  ks_p: float
  mean_difference: Effect


def compare_spaces(a: dict, b: dict, level: float = LEVEL, seed: int = 0) -> Comparison:
  """{model key: error} of two design spaces. The mean difference is paired where the
  spaces share sampled models, its interval a bootstrap over the models."""
  effect = paired_effect(a, b, level, method='bootstrap', seed=seed)
  if not effect.paired:  # unpaired: resample each space on its own
    x, y = np.asarray(list(a.values()), float), np.asarray(list(b.values()), float)
    rng = np.random.default_rng(seed)
    diffs = (y[rng.integers(0, y.size, (BOOTSTRAPS, y.size))].mean(1)
             - x[rng.integers(0, x.size, (BOOTSTRAPS, x.size))].mean(1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    known = x.size > 1 and y.size > 1
    mean = float(y.mean() - x.mean())
    interval = Interval(mean, float(lo) if known else mean, float(hi) if known else mean,
                        min(x.size, y.size), 'bootstrap')
    effect = Effect(interval, False, x.size, y.size)
  d = ks_distance(list(a.values()), list(b.values()))
  return Comparison(d, ks_pvalue(d, len(a), len(b)), effect)
