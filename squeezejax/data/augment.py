"""On-device augmentation and preprocessing: pure jnp, static shapes, jit-friendly.

The trainer calls these inside its jitted step on a uint8 batch that already
lives on device, so nothing here leaves JAX. Every random choice is drawn per
image from `key` and applied with fixed-shape operations (`lax.dynamic_slice`,
`jax.image.scale_and_translate`, `jnp.where`), so one compiled step serves every
batch. Output: float32 [B, image_size, image_size, C], (x / 255 - mean) / std.

Kinds (the same names as the tf.data streams):
  none       resize to image_size if needed, normalise (= `preprocess`).
  crop_flip  zero-pad 4 px, random image_size crop, random horizontal flip
             (the CIFAR recipe; meant for 28-32 px images).
  caffe      resize to image_size * 256/227, random image_size crop, no flip
             (the paper's Caffe recipe: 256 -> random 227).
  inception  random resized crop (8-100% of the area, aspect 3/4-4/3) + flip.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from squeezejax.data import core

PAD = 4  # crop_flip padding, in pixels
CAFFE_RESIZE = 256 / 227
INCEPTION_AREA = (0.08, 1.0)
INCEPTION_RATIO = (3 / 4, 4 / 3)


def _check(images: jax.Array, image_size: int, mean: Sequence[float],
           std: Sequence[float]) -> tuple[jax.Array, jax.Array]:
  if images.ndim != 4:
    raise UserError(f'images of shape {images.shape} are not allowed: expected '
                         '[batch, height, width, channels]')
  if not isinstance(image_size, int) or image_size <= 0:
    raise UserError(f'image_size={image_size!r} is not allowed: expected a positive int')
  channels = images.shape[-1]
  mean = jnp.asarray(core.stats_tuple(mean, channels, 'mean'), jnp.float32)
  std = jnp.asarray(core.stats_tuple(std, channels, 'std'), jnp.float32)
  return mean, std


def _normalize(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  return core.normalize(x.astype(jnp.float32), mean, std)


def _resize(x: jax.Array, size: int) -> jax.Array:
  """[B, H, W, C] -> [B, size, size, C] float32 (a no-op at the same size)."""
  b, h, w, c = x.shape
  x = x.astype(jnp.float32)
  if (h, w) == (size, size):
    return x
  return jax.image.resize(x, (b, size, size, c), 'bilinear', antialias=True)


def _flip(x: jax.Array, keys: jax.Array) -> jax.Array:
  flip = jax.vmap(lambda k: jax.random.bernoulli(k))(keys)
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def _random_crop(x: jax.Array, keys: jax.Array, size: int) -> jax.Array:
  """A size x size window at a uniform random offset, per image."""
  _, h, w, c = x.shape

  def crop(image, key):
    ky, kx = jax.random.split(key)
    top = jax.random.randint(ky, (), 0, h - size + 1)
    left = jax.random.randint(kx, (), 0, w - size + 1)
    return jax.lax.dynamic_slice(image, (top, left, 0), (size, size, c))

  return jax.vmap(crop)(x, keys)


def _random_resized_crop(x: jax.Array, keys: jax.Array, size: int) -> jax.Array:
  """Inception-style crop: area fraction and log-aspect drawn uniformly, the box
  clipped into the image, resampled to size x size (antialiased bilinear)."""
  _, h, w, c = x.shape
  lo, hi = math.log(INCEPTION_RATIO[0]), math.log(INCEPTION_RATIO[1])

  def crop(image, key):
    ka, kr, ky, kx = jax.random.split(key, 4)
    area = jax.random.uniform(ka, (), minval=INCEPTION_AREA[0], maxval=INCEPTION_AREA[1]) * h * w
    ratio = jnp.exp(jax.random.uniform(kr, (), minval=lo, maxval=hi))
    crop_h = jnp.clip(jnp.sqrt(area / ratio), 1.0, h)
    crop_w = jnp.clip(jnp.sqrt(area * ratio), 1.0, w)
    top = jax.random.uniform(ky, ()) * (h - crop_h)
    left = jax.random.uniform(kx, ()) * (w - crop_w)
    scale = jnp.stack([size / crop_h, size / crop_w])
    translation = -jnp.stack([top, left]) * scale
    return jax.image.scale_and_translate(image, (size, size, c), (0, 1), scale, translation,
                                         'linear', antialias=True)

  return jax.vmap(crop)(x.astype(jnp.float32), keys)


def preprocess(images: jax.Array, *, image_size: int, mean: Sequence[float],
               std: Sequence[float]) -> jax.Array:
  """Evaluation: no randomness; resize only if the size differs; normalise."""
  mean, std = _check(images, image_size, mean, std)
  return _normalize(_resize(images, image_size), mean, std)


def augment(images: jax.Array, key: jax.Array, *, kind: str, image_size: int,
            mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Training augmentation of a uint8 batch; see the module docstring for kinds."""
  core.check_augment(kind)
  mean_, std_ = _check(images, image_size, mean, std)
  if kind == 'none':
    return _normalize(_resize(images, image_size), mean_, std_)
  crop_key, flip_key = jax.random.split(key)
  crop_keys = jax.random.split(crop_key, images.shape[0])
  flip_keys = jax.random.split(flip_key, images.shape[0])
  if kind == 'crop_flip':
    x = _resize(images, image_size)
    x = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))  # black border, as torchvision
    x = _flip(_random_crop(x, crop_keys, image_size), flip_keys)
  elif kind == 'caffe':
    x = _resize(images, round(image_size * CAFFE_RESIZE))
    x = _random_crop(x, crop_keys, image_size)
  else:  # inception
    x = _flip(_random_resized_crop(images, crop_keys, image_size), flip_keys)
  return _normalize(x, mean_, std_)
