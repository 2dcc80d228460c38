"""Timing on devices: windows synchronised once at their end, and the matmul peak that
`squeezejax bench` measures MFU against."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from squeezejax import parallel
from squeezejax import step as step_lib


def timed(run: Callable[[int], Any], steps: int, sync: Callable[[Any], Any]) -> float:
  """Seconds for `steps` calls of run, synchronised once at the end."""
  start = time.perf_counter()
  sync(run(steps))
  return time.perf_counter() - start


def block(tree) -> None:
  jax.block_until_ready(tree)


def matmul_peak_gflops(mesh, size: int = 2048, reps: int = 4, windows: int = 3,
                       dtype: str = 'float32') -> float:
  """Matmul GFLOP/s (float32, or `dtype`) over every device of the mesh: the MFU ceiling.

  One size^3 matmul per device per call (a [devices, size, size] batch sharded
  on 'data'); the best window is the peak.
  """
  n = mesh.size
  sharding = parallel.batch_sharding(mesh)
  a = jax.device_put(np.random.default_rng(0).standard_normal((n, size, size), np.float32)
                     .astype(step_lib.DTYPES[dtype]), sharding)
  matmul = jax.jit(lambda x, y: jnp.einsum('dij,djk->dik', x, y), out_shardings=sharding)
  block(matmul(a, a))

  def run(k):
    out = a
    for _ in range(k):
      out = matmul(a, out)  # chained, so no call can be skipped
    return out

  best = min(timed(run, reps, block) for _ in range(windows))
  return 2 * size**3 * n * reps / best / 1e9
