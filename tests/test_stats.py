"""squeezejax.stats on constructed data with known answers."""

import numpy as np
import pytest

from squeezejax import stats


def test_t_quantiles_match_the_tables():
  # Student t 0.975 quantiles (any statistics table) and the normal limit.
  for df, expected in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (1000, 1.9623)):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)
  assert stats.t_quantile(0.95, 2) == pytest.approx(2.9200, abs=2e-4)


def test_interval_contains_the_true_mean_at_its_level():
  """3 'seeds' from N(0.85, 0.01): the t interval covers 0.85 in about 95% of 2000
  repeats, the bootstrap of 3 values far less often (why seeds get the t interval)."""
  rng = np.random.default_rng(1)
  draws = rng.normal(0.85, 0.01, (2000, 3))
  t_cover = np.mean([(i := stats.mean_interval(x)).lo <= 0.85 <= i.hi for x in draws])
  assert 0.93 <= t_cover <= 0.97
  boot = [stats.mean_interval(x, method='bootstrap', bootstraps=300, seed=k)
          for k, x in enumerate(draws[:300])]
  assert np.mean([i.lo <= 0.85 <= i.hi for i in boot]) < 0.85
  one = stats.mean_interval([0.9])
  assert (one.mean, one.lo, one.hi, one.known) == (0.9, 0.9, 0.9, False)
  with pytest.raises(ValueError, match='method'):
    stats.mean_interval([1, 2], method='jackknife')


def test_a_paired_effect_is_detected_where_unpaired_noise_hides_it():
  """Seeds move both points together by a lot (+-2 points); b is a + 0.5 points
  (+-0.05). Paired by seed the gain is certain; unpaired it is lost in the seed noise."""
  rng = np.random.default_rng(0)
  seed_effect = rng.normal(0, 0.02, 5)
  a = {s: 0.85 + seed_effect[s] for s in range(5)}
  b = {s: a[s] + 0.005 + rng.normal(0, 0.0005) for s in range(5)}
  effect = stats.paired_effect(a, b)
  assert effect.paired and effect.interval.n == 5
  assert 0 < effect.interval.lo < 0.005 < effect.interval.hi
  assert stats.verdict(effect, 'greater') == stats.SUPPORTED
  unpaired = stats.paired_effect(a, {s + 10: v for s, v in b.items()})
  assert not unpaired.paired and unpaired.interval.lo < 0 < unpaired.interval.hi
  assert stats.verdict(unpaired, 'greater', margin=0.005) == stats.INCONCLUSIVE


def test_no_effect_is_not_detected_and_a_tight_null_is_decided():
  rng = np.random.default_rng(2)
  a = {s: 0.85 + rng.normal(0, 0.01) for s in range(3)}
  b = {s: a[s] + rng.normal(0, 0.01) for s in range(3)}  # no true effect, noisy
  effect = stats.paired_effect(a, b)
  assert effect.interval.lo < 0 < effect.interval.hi
  assert stats.verdict(effect, 'greater') == stats.INCONCLUSIVE
  # The same null with little noise and 8 seeds: "no gain of 0.5 points" is decided.
  a = {s: 0.85 + rng.normal(0, 0.01) for s in range(8)}
  b = {s: a[s] + rng.normal(0, 0.0005) for s in range(8)}
  effect = stats.paired_effect(a, b)
  assert stats.verdict(effect, 'greater', margin=0.005) == stats.NOT_SUPPORTED
  assert stats.verdict(effect, 'at_most', margin=0.005) == stats.SUPPORTED
  assert stats.verdict(effect, 'at_least', margin=0.005) == stats.SUPPORTED
  worse = stats.paired_effect(a, {s: v - 0.02 for s, v in b.items()})
  assert stats.verdict(worse, 'at_least', margin=0.005) == stats.NOT_SUPPORTED
  better = stats.paired_effect(a, {s: v + 0.02 for s, v in b.items()})
  assert stats.verdict(better, 'at_most', margin=0.005) == stats.NOT_SUPPORTED
  # One run a side: no interval, so never a verdict.
  assert stats.verdict(stats.paired_effect({0: 0.8}, {0: 0.9}), 'greater') == (
      stats.INCONCLUSIVE)


def test_edf_of_known_samples_and_its_band():
  samples = [3.0, 1.0, 2.0, 2.0]
  np.testing.assert_array_equal(stats.edf(samples, [0.5, 1, 1.5, 2, 2.5, 3, 9]),
                                [0, 0.25, 0.25, 0.75, 0.75, 1, 1])
  rng = np.random.default_rng(3)
  uniform = rng.uniform(0, 1, 200)
  at = np.linspace(0.05, 0.95, 19)
  lo, hi = stats.edf_band(uniform, at, seed=0)
  assert np.all(lo <= stats.edf(uniform, at)) and np.all(stats.edf(uniform, at) <= hi)
  assert np.mean((lo <= at) & (at <= hi)) >= 0.8  # the true CDF F(x) = x, pointwise
  assert np.max(hi - lo) < 0.16  # about 2 x 1.96 x sqrt(0.25 / 200)
  again = stats.edf_band(uniform, at, seed=0)
  np.testing.assert_array_equal(lo, again[0])  # seeded: a report redraws identically


def test_two_design_spaces_compared():
  rng = np.random.default_rng(4)
  a = {k: e for k, e in enumerate(rng.normal(12, 1, 40))}
  same = {k + 100: e for k, e in enumerate(rng.normal(12, 1, 40))}
  lower = {k: e - 1.5 + rng.normal(0, 0.2) for k, e in a.items()}
  assert stats.ks_distance([1, 2, 3], [1, 2, 3]) == 0
  assert stats.ks_distance([1, 2], [3, 4]) == 1
  null = stats.compare_spaces(a, same)
  assert not null.mean_difference.paired and null.ks_p > 0.05
  assert null.mean_difference.interval.lo < 0 < null.mean_difference.interval.hi
  better = stats.compare_spaces(a, lower)
  assert better.mean_difference.paired and better.ks > 0.4 and better.ks_p < 1e-3
  interval = better.mean_difference.interval
  assert -1.65 < interval.lo < -1.5 < interval.hi < -1.35


# -- sampled design spaces ------------------------------------------------------------------

from squeezejax import design_space as ds  # noqa: E402
from squeezejax import spec as spec_lib  # noqa: E402
from squeezejax.errors import UserError  # noqa: E402

SPACE = {'squeeze_ratio': ds.LogUniform(0.125, 1.0), 'pct_3x3': ds.Uniform(0.01, 0.99),
         'base_e': ds.IntRange(16, 48), 'incr_e': ds.IntRange(0, 48), 'freq': ds.IntRange(1, 4)}
BASE = dict(layout='small', num_classes=10, in_channels=1)


def test_sampling_is_seeded_constrained_and_valid_for_every_variant():
  cross = {'bypass': ('none', 'simple')}
  models = ds.sample(SPACE, 30, seed=0, base=BASE, image_size=28, cross=cross,
                     max_params=100_000)
  assert models == ds.sample(SPACE, 30, seed=0, base=BASE, image_size=28, cross=cross,
                             max_params=100_000)
  assert models != ds.sample(SPACE, 30, seed=1, base=BASE, image_size=28, cross=cross,
                             max_params=100_000)
  assert len({json_key(m) for m in models}) == 30
  for m in models:
    assert 0.125 <= m['squeeze_ratio'] <= 1 and 0.01 <= m['pct_3x3'] <= 0.99
    assert 16 <= m['base_e'] <= 48 and m['freq'] in (1, 2, 3, 4)
    for bypass in cross['bypass']:  # both variants build, within the budget
      assert spec_lib.SqueezeNetSpec(**BASE, **m, bypass=bypass).cost(28)['params'] <= 100_000
  # A simple bypass rules out odd freq (a channel change inside a bypassed module)
  # unless incr_e is 0; without the cross, odd freq is drawn.
  assert all(m['freq'] % 2 == 0 or m['incr_e'] == 0 for m in models)
  assert any(m['freq'] % 2 for m in ds.sample(SPACE, 30, seed=0, base=BASE, image_size=28))
  # The distributions: log-uniform SR puts half its mass below the geometric mean.
  # (Points are distinct; in a space of five keys repeats are too rare to bias that.)
  many = ds.sample(SPACE, 400, seed=0, base=BASE, image_size=28)
  below = np.mean([m['squeeze_ratio'] < np.sqrt(0.125) for m in many])
  assert 0.4 < below < 0.6
  grid = ds.overrides(models[:2], cross)
  assert [g['spec.bypass'] for g in grid] == ['none', 'simple', 'none', 'simple']
  assert grid[0]['spec.squeeze_ratio'] == grid[1]['spec.squeeze_ratio']


def test_sampling_refuses_what_cannot_be_sampled():
  with pytest.raises(UserError, match="'sr' is not allowed"):
    ds.sample({'sr': ds.Uniform(0, 1)}, 3, base=BASE)
  with pytest.raises(UserError, match='gave 0 of 5 valid points'):
    ds.sample(SPACE, 5, base=BASE, image_size=28, max_params=10, max_draws=200)


def json_key(m):
  return tuple(sorted(m.items()))
