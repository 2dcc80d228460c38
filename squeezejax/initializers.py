"""The networks' random kernel initialisers, drawn together.

Each is the function of jax.nn.initializers it names, number for number, and
`model.create` draws all of a network's kernels in a few batched calls
(`drawn_together`). That gives the same numbers because jax.random's threefry
numbers are a function of (key, flat index) alone (jax_threefry_partitionable,
JAX's default), so `uniform(key, (n,))[:size].reshape(shape)` is
`uniform(key, shape)`, and because a kernel's key is `fold_in(rngs.params.key,
count)` (nnx.Conv and nnx.Linear take theirs from `rngs.params()`), so the keys
are one batched fold_in. Drawn one call per kernel, a network's initialisation
was a program of hundreds of small kernels that took XLA:CPU seconds to compile
for every new design point (docs/performance.md); drawn together it is a few."""

from __future__ import annotations

import contextvars
import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# A batch draws rows x its largest kernel's numbers: at most this factor times the
# numbers it keeps, or FREE_PADDING (AlexNet's fully connected layers are large).
MAX_PADDING_FACTOR = 2
FREE_PADDING = 1 << 20

_pending = contextvars.ContextVar('squeezejax_initializers', default=None)


class _Draw(NamedTuple):
  placeholder: jax.Array  # what the module holds until `drawn_together` replaces it
  init: 'Random'
  count: jax.Array  # the params stream's count its key was folded with
  shape: tuple[int, ...]
  dtype: Any

  @property
  def size(self) -> int:
    return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class Random:
  """`distribution` ('uniform' on [-1, 1) or 'normal') times `stddev`, or, with
  `fan_in_scale`, variance_scaling(fan_in_scale, 'fan_in', distribution)."""
  distribution: str
  stddev: float | None = None
  fan_in_scale: float | None = None

  def __call__(self, key, shape, dtype=jnp.float32):
    shape = tuple(shape)
    pending = _pending.get()
    if pending is None:
      return self.sample(key[None], math.prod(shape), dtype)[0].reshape(shape) * self.factor(
          shape, dtype)
    # The key was fold_in(stream.key, stream.count - 1) (nnx.RngStream.__call__).
    stream, draws = pending
    draws.append(_Draw(jnp.zeros(shape, dtype), self, stream.count[...] - 1, shape, dtype))
    return draws[-1].placeholder  # dropped by XLA once replaced

  def sample(self, keys, size: int, dtype) -> jax.Array:
    """[len(keys), size] numbers, row i drawn with keys[i]."""
    if self.distribution == 'uniform':
      return jax.vmap(lambda k: jax.random.uniform(k, (size,), dtype, -1))(keys)
    return jax.vmap(lambda k: jax.random.normal(k, (size,), dtype))(keys)

  def factor(self, shape, dtype) -> jax.Array:
    """What the unit draw is multiplied by, computed as jax.nn.initializers does."""
    if self.fan_in_scale is None:
      return jnp.array(self.stddev, dtype)
    receptive_field = math.prod(shape) / shape[-2] / shape[-1]
    variance = jnp.array(self.fan_in_scale / (shape[-2] * receptive_field), dtype=dtype)
    return jnp.sqrt(3 * variance) if self.distribution == 'uniform' else jnp.sqrt(variance)


def he_uniform() -> Random:
  return Random('uniform', fan_in_scale=2.0)


def lecun_uniform() -> Random:
  return Random('uniform', fan_in_scale=1.0)


def uniform_fan_in(scale: float) -> Random:
  return Random('uniform', fan_in_scale=scale)


def normal(stddev: float) -> Random:
  return Random('normal', stddev=stddev)


def drawn_together(make_module, rngs: nnx.Rngs) -> nnx.Module:
  """`make_module()` (built with `rngs`), with its `Random` kernels drawn in a few
  batched calls."""
  if not jax.config.jax_threefry_partitionable:  # then a draw depends on its shape
    return make_module()
  draws: list[_Draw] = []
  token = _pending.set((rngs.params, draws))
  try:
    module = make_module()
  finally:
    _pending.reset(token)
  base = rngs.params.key[...]
  groups: dict[tuple[str, Any], list[_Draw]] = {}
  for draw in sorted(draws, key=lambda d: -d.size):
    groups.setdefault((draw.init.distribution, jnp.dtype(draw.dtype)), []).append(draw)
  values = {}
  for (distribution, dtype), group in groups.items():
    # Normal draws stay one call per kernel: batched, XLA:CPU's unoptimised (-O0)
    # code rounded some of them 1 ulp apart from flax's (docs/performance.md). Networks
    # draw few.
    for batch in _batches(group) if distribution == 'uniform' else ([d] for d in group):
      keys = jax.vmap(jax.random.fold_in, (None, 0))(base, jnp.stack([d.count for d in batch]))
      rows = batch[0].init.sample(keys, batch[0].size, dtype)
      for row, draw in zip(rows, batch):
        values[id(draw.placeholder)] = (row[:draw.size].reshape(draw.shape)
                                        * draw.init.factor(draw.shape, draw.dtype))
  for _, variable in nnx.iter_graph(module):
    if isinstance(variable, nnx.Param) and id(variable.get_value()) in values:
      variable.set_value(values[id(variable.get_value())])
  return module


def _batches(draws: list[_Draw]):
  """Consecutive runs of `draws` (largest first), each drawn at its first's size."""
  batch: list[_Draw] = []
  for draw in draws:
    kept = sum(d.size for d in batch) + draw.size
    if batch and (len(batch) + 1) * batch[0].size > max(MAX_PADDING_FACTOR * kept,
                                                        FREE_PADDING):
      yield batch
      batch = []
    batch.append(draw)
  if batch:
    yield batch
