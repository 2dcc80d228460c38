"""Magnitude pruning (Han et al. 2015) and the optimizer transform that keeps it.

Two rules pick, per layer, the convolution weights to remove (biases are kept):

  * density targets: keep the largest-magnitude fraction d of each layer's weights;
    `layer_densities('conv1=1,*/expand3x3=0.3,*=0.5')` gives d per layer name
    (fnmatch patterns, the first match wins);
  * Han's threshold: remove |w| < quality x std(layer's remaining weights).

Pruning is iterated with retraining (`squeezejax compress`). During retraining the
mask lives in the optimizer state, which is part of the train state: `keep_zeros`
is an optax transform whose state is the mask of the kernels that were exactly zero
when it was initialised (from the pruned parameters), and whose update multiplies
every kernel update by that mask. Pruned weights therefore stay exactly 0 through
momentum and weight decay.
"""

from __future__ import annotations

import fnmatch
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from squeezejax.errors import UserError


def layer_densities(text: str, names: list[str]) -> dict[str, float]:
  """'PATTERN=DENSITY,...' -> {layer name: density}; every layer must match a pattern."""
  rules = []
  for part in filter(None, (p.strip() for p in str(text).split(','))):
    pattern, eq, value = part.partition('=')
    try:
      density = float(value) if eq else float(pattern)
    except ValueError:
      raise UserError(f'density {part!r} is not allowed: expected PATTERN=NUMBER, e.g. '
                      '"conv1=1,*/expand3x3=0.33,*=0.5"') from None
    if not 0 < density <= 1:
      raise UserError(f'density {part!r}: {density:g} is not allowed: expected a number in '
                      '(0, 1]')
    rules.append((pattern.strip() if eq else '*', density))
  out = {}
  for name in names:
    match = next((d for p, d in rules if fnmatch.fnmatchcase(name, p)), None)
    if match is None:
      raise UserError(f'no density for layer {name!r} in {text!r}: add a pattern for it '
                      '(e.g. "*=0.5")')
    out[name] = match
  return out


def magnitude_mask(weights: np.ndarray, density: float) -> np.ndarray:
  """True for the round(density * n) largest-magnitude weights (ties broken by order)."""
  w = np.abs(np.asarray(weights, np.float32)).ravel()
  keep = int(round(density * w.size))
  mask = np.zeros(w.size, bool)
  if keep:
    mask[np.argsort(-w, kind='stable')[:keep]] = True
  return mask.reshape(np.shape(weights))


def threshold_mask(weights: np.ndarray, quality: float) -> np.ndarray:
  """Han's rule: keep |w| >= quality x std of the layer's non-zero weights."""
  w = np.asarray(weights, np.float32)
  alive = w[w != 0]
  if alive.size == 0:
    return w != 0
  return (np.abs(w) >= quality * alive.std()) & (w != 0)


# -- in the optimizer -------------------------------------------------------------------


def is_kernel(path) -> bool:
  return bool(path) and getattr(path[-1], 'key', None) == 'kernel'


class KeepZerosState(NamedTuple):
  mask: optax.Params  # 1.0 where a kernel weight may change; biases all 1.0


def keep_zeros() -> optax.GradientTransformation:
  """Zeroes the updates of kernel weights that were 0 at init (the pruned ones)."""

  def init(params):
    return KeepZerosState(jax.tree.map_with_path(
        lambda p, x: (x != 0).astype(x.dtype) if is_kernel(p) else jnp.ones_like(x), params))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, state.mask), state

  return optax.GradientTransformation(init, update)

