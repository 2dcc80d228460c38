"""Trained weight sharing (Deep Compression, section 3).

Each layer's surviving weights are clustered by 1-D k-means into 2**bits - 1
centroids with linear initialisation (evenly spaced between the smallest and the
largest weight, the paper's best choice); code 0 stays for pruned weights. Then the
centroids are fine-tuned with the assignments fixed: the gradient of a centroid is
the sum of the gradients of its weights (the paper's eq. 3).

`shared_gradients` does that inside the ordinary trainer: an optax transform, first
in the chain, whose state holds each kernel weight's cluster (the train state holds
the assignments) and which replaces every kernel gradient by its cluster's summed
gradient (0 for pruned weights). Weights of one cluster start equal and receive
equal updates from the rest of the optimizer (momentum and weight decay act weight
by weight), so they stay one shared value: its centroid.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from squeezejax.compression import prune

MAX_CLUSTERS = 256  # 8-bit codes


def kmeans_1d(values: np.ndarray, clusters: int, iterations: int = 30
              ) -> tuple[np.ndarray, np.ndarray]:
  """(centroids float32[clusters], assignment int32 per value) by Lloyd's algorithm from
  a linear initialisation; a cluster that empties keeps its centroid."""
  v = np.asarray(values, np.float64).ravel()
  if v.size == 0:
    return np.zeros(clusters, np.float32), np.zeros(0, np.int32)
  centroids = np.linspace(v.min(), v.max(), clusters)
  for _ in range(iterations):
    order = np.argsort(centroids, kind='stable')
    edges = (centroids[order][1:] + centroids[order][:-1]) / 2
    assign = order[np.searchsorted(edges, v)]
    sums = np.bincount(assign, v, clusters)
    counts = np.bincount(assign, minlength=clusters)
    updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    if np.allclose(updated, centroids, rtol=0, atol=1e-12):
      break
    centroids = updated
  order = np.argsort(centroids, kind='stable')
  edges = (centroids[order][1:] + centroids[order][:-1]) / 2
  return centroids.astype(np.float32), order[np.searchsorted(edges, v)].astype(np.int32)


def quantize(weights: np.ndarray, code_bits: int, iterations: int = 30
             ) -> tuple[np.ndarray, np.ndarray]:
  """(codebook float32[2**code_bits] with entry 0 == 0, dense codes int32) of one layer:
  k-means over its non-zero weights."""
  w = np.asarray(weights, np.float32)
  alive = w != 0
  centroids, assign = kmeans_1d(w[alive], (1 << code_bits) - 1, iterations)
  # A centroid of exactly 0.0 would read back as a pruned weight.
  centroids = np.where(centroids == 0, np.float32(1e-12), centroids)
  codes = np.zeros(w.shape, np.int32)
  codes[alive] = assign + 1
  return np.concatenate([[0.0], centroids]).astype(np.float32), codes


class SharedState(NamedTuple):
  cluster: optax.Params  # per kernel weight: its cluster index among the layer's values


def shared_gradients() -> optax.GradientTransformation:
  """Kernel gradients -> their cluster's summed gradient (0 where a weight is 0).

  The clusters are the distinct values of each kernel at init (at most MAX_CLUSTERS
  per kernel: weights quantized by `quantize`); biases pass through unchanged.
  """

  def init(params):
    def cluster(path, x):
      if not prune.is_kernel(path):
        return jnp.zeros((), jnp.int32)
      _, inverse = jnp.unique(x.ravel(), size=MAX_CLUSTERS + 1, return_inverse=True,
                              fill_value=jnp.max(x))
      return jnp.where(x != 0, inverse.reshape(x.shape), -1).astype(jnp.int32)
    return SharedState(jax.tree.map_with_path(cluster, params))

  def update(updates, state, params=None):
    del params

    def share(g, c):
      if c.ndim == 0:
        return g
      summed = jax.ops.segment_sum(jnp.where(c >= 0, g, 0).ravel(), jnp.maximum(c, 0).ravel(),
                                   MAX_CLUSTERS + 1)
      return jnp.where(c >= 0, summed[jnp.maximum(c, 0)], 0).astype(g.dtype)

    return jax.tree.map(share, updates, state.cluster), state

  return optax.GradientTransformation(init, update)
