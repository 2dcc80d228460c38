"""AlexNet, the paper's baseline: layouts -> per-layer shapes and cost (pure Python).

Three layouts, each a stack of convolutions (with their grouping, LRN and max
pools) followed by three fully connected layers:

  caffe        bvlc_alexnet (Krizhevsky et al. 2012 as released in Caffe): conv2,
               conv4 and conv5 in two groups (the two-GPU towers), LRN after conv1
               and conv2 (conv -> ReLU -> LRN -> pool), 227 px, 60,965,224 parameters.
  torchvision  torchvision's single-tower variant ("one weird trick"): 64/192/384/
               256/256 filters, no groups or LRN, a 6x6 adaptive average pool before
               fc6, 224 px, 61,100,840 parameters.
  small        an adaptation for 28-32 px inputs (Fashion-MNIST, CIFAR), not from a
               paper: torchvision's filter counts with a 5x5 stride-1 conv1 and a
               5x5 conv2 (both padded), a pool after conv1, conv2 and conv5
               (28 -> 14 -> 7 -> 3), Caffe's LRN after conv1 and conv2, an
               adaptive 3x3 average pool (as torchvision's 6x6) and
               `fc_width`-wide fc6 and fc7.

fc6 reads a fixed-size map: torchvision's and the small layout's adaptive pool
make any large enough input fit; Caffe's layout takes the inputs whose pool5 is
6x6 (227 px and its neighbours).

LRN is Caffe's: x / (k + alpha / n * sum over n neighbouring channels of x^2)^beta
with n = local_size = 5, alpha = 1e-4, beta = 0.75, k = 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from squeezejax.errors import UserError
from squeezejax.spec import LayerCost, is_number, not_allowed, pool_output_size, totals

LAYOUTS = ('caffe', 'torchvision', 'small')
INITS = ('caffe', 'torchvision')
LRN = dict(local_size=5, alpha=1e-4, beta=0.75, k=1.0)


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  name: str
  in_channels: int
  filters: int
  kernel: int
  stride: int
  padding: int
  groups: int = 1
  lrn: bool = False  # a Caffe LRN after the ReLU
  pool: bool = False  # a 3x3/2 max pool after that

  @property
  def params(self) -> int:
    return self.kernel ** 2 * self.in_channels // self.groups * self.filters + self.filters

  def macs_per_pixel(self) -> int:
    return self.kernel ** 2 * self.in_channels // self.groups * self.filters


# (filters, kernel, stride, padding, groups, lrn, pool) of conv1..conv5.
_CONVS = {
    'caffe': ((96, 11, 4, 0, 1, True, True), (256, 5, 1, 2, 2, True, True),
              (384, 3, 1, 1, 1, False, False), (384, 3, 1, 1, 2, False, False),
              (256, 3, 1, 1, 2, False, True)),
    'torchvision': ((64, 11, 4, 2, 1, False, True), (192, 5, 1, 2, 1, False, True),
                    (384, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, False),
                    (256, 3, 1, 1, 1, False, True)),
    'small': ((64, 5, 1, 2, 1, True, True), (192, 5, 1, 2, 1, True, True),
              (384, 3, 1, 1, 1, False, False), (256, 3, 1, 1, 1, False, False),
              (256, 3, 1, 1, 1, False, True)),
}
DEFAULT_IMAGE_SIZE = {'caffe': 227, 'torchvision': 224, 'small': 32}
# The side of the adaptive average pool before fc6 (none in Caffe's layout).
ADAPTIVE_POOL = {'torchvision': 6, 'small': 3}


@dataclasses.dataclass(frozen=True)
class AlexNetSpec:
  """One AlexNet; `layout` fixes the convolutions, the rest are the head's knobs."""
  family: ClassVar[str] = 'alexnet'
  head: ClassVar[str] = 'fc8'  # the classifier's parameters (fine-tuning, linear probes)
  layout: str = 'caffe'
  fc_width: int = 4096  # fc6 and fc7
  num_classes: int = 1000
  in_channels: int = 3
  dropout_rate: float = 0.5
  init: str = 'caffe'  # Caffe's Gaussians and 0 / 0.1 biases, or torchvision's defaults

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    bad = not_allowed
    if self.layout not in LAYOUTS:
      bad('layout', self.layout, f'one of {", ".join(LAYOUTS)}')
    if self.init not in INITS:
      bad('init', self.init, f'one of {", ".join(INITS)}')
    for field in ('fc_width', 'num_classes', 'in_channels'):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        bad(field, value, 'an integer >= 1')
    if not is_number(self.dropout_rate) or not 0 <= self.dropout_rate < 1:
      bad('dropout_rate', self.dropout_rate, 'a number in [0, 1)')

  # -- shapes -------------------------------------------------------------------------

  @property
  def default_image_size(self) -> int:
    return DEFAULT_IMAGE_SIZE[self.layout]

  def convs(self) -> tuple[ConvLayer, ...]:
    layers, c = [], self.in_channels
    for i, (f, k, s, p, g, lrn, pool) in enumerate(_CONVS[self.layout]):
      layers.append(ConvLayer(f'conv{i + 1}', c, f, k, s, p, g, lrn, pool))
      c = f
    return tuple(layers)

  @property
  def pooled_size(self) -> int | None:
    """The side of the adaptive average pool before fc6 (torchvision), else None."""
    return ADAPTIVE_POOL.get(self.layout)

  def feature_strides(self) -> dict[str, int]:
    """The stride of each conv's output map (after its pool; see `model.features`)."""
    strides, stride = {}, 1
    for conv in self.convs():
      stride *= conv.stride * (2 if conv.pool else 1)
      strides[conv.name] = stride
    return strides

  def _spatial_sizes(self, image_size: int) -> list[int] | None:
    """Each conv's output side (before its pool) and the side fc6 reads; None if too small."""
    sizes, h = [], image_size
    for conv in self.convs():
      h = (h + 2 * conv.padding - conv.kernel) // conv.stride + 1
      if h < 1:
        return None
      sizes.append(h)
      if conv.pool:
        if h < 3:
          return None
        h = pool_output_size(h)
    return sizes + [self.pooled_size or h]

  def min_image_size(self) -> int:
    size = 1
    while self._spatial_sizes(size) is None:
      size += 1
    return size

  def _fc_side(self) -> int:
    return self._spatial_sizes(self.default_image_size)[-1]

  def check_image_size(self, image_size: int) -> None:
    if (isinstance(image_size, bool) or not isinstance(image_size, int)
        or self._spatial_sizes(image_size) is None):
      raise UserError(
          f'image_size={image_size!r} is too small for AlexNet layout {self.layout!r}: '
          f'expected an integer >= {self.min_image_size()}')
    if self._spatial_sizes(image_size)[-1] != self._fc_side():
      fits = [s for s in range(image_size - 8, image_size + 9)
              if s > 0 and (self._spatial_sizes(s) or [0])[-1] == self._fc_side()]
      raise UserError(
          f'image_size={image_size!r} is not allowed for AlexNet layout {self.layout!r}: fc6 '
          f'reads a {self._fc_side()}x{self._fc_side()} map; expected e.g. '
          f'{self.default_image_size}{" or " + ", ".join(map(str, fits)) if fits else ""}')

  def fc_in_features(self) -> int:
    return self._fc_side() ** 2 * self.convs()[-1].filters

  # -- cost -----------------------------------------------------------------------------

  def layers(self, image_size: int | None = None) -> tuple[LayerCost, ...]:
    image_size = image_size or self.default_image_size
    self.check_image_size(image_size)
    sizes = self._spatial_sizes(image_size)
    rows = []
    for i, (conv, h) in enumerate(zip(self.convs(), sizes)):
      group = f' g{conv.groups}' if conv.groups > 1 else ''
      rows.append(LayerCost(conv.name, 'conv', (h, h, conv.filters), conv.params,
                            h * h * conv.macs_per_pixel(),
                            kernel=f'{conv.kernel}x{conv.kernel}/{conv.stride}{group}'))
      if conv.lrn:
        rows.append(LayerCost(f'norm{i + 1}', 'lrn', (h, h, conv.filters),
                              kernel=f'LRN {LRN["local_size"]}'))
      if conv.pool:
        p = pool_output_size(h)
        rows.append(LayerCost(f'pool{i + 1}', 'pool', (p, p, conv.filters), kernel='3x3/2'))
    if self.pooled_size:
      s = self.pooled_size
      rows.append(LayerCost('avgpool', 'avgpool', (s, s, self.convs()[-1].filters),
                            kernel=f'adaptive {s}x{s}'))
    fan_in = self.fc_in_features()
    for name, out in (('fc6', self.fc_width), ('fc7', self.fc_width), ('fc8', self.num_classes)):
      rows.append(LayerCost(name, 'fc', (1, 1, out), fan_in * out + out, fan_in * out))
      fan_in = out
    return tuple(rows)

  def cost(self, image_size: int | None = None) -> dict[str, Any]:
    return totals(self.layers(image_size), image_size or self.default_image_size)

  def describe(self) -> str:
    return (f'AlexNet layout {self.layout}, fc_width {self.fc_width}, '
            f'{self.num_classes} classes')

  def to_dict(self) -> dict[str, Any]:
    return {'family': self.family, **dataclasses.asdict(self)}


PRESETS = {
    'alexnet_caffe': dict(layout='caffe'),
    'alexnet': dict(layout='torchvision', init='torchvision'),
    # 28-32 px, 10 classes; see the module docstring.
    'alexnet_small': dict(layout='small', num_classes=10, fc_width=1024),
}
