"""SqueezeNeXt (Gholami et al. 2018, arXiv 1803.10615): metaparameters -> shapes and cost.

Pure Python, no JAX. The network: a stem conv (7x7/2) and a 3x3/2 max pool, four
stages of units (the first unit of stages 2-4 has stride 2), a 1x1 head conv, a
global average pool and a fully connected classifier. Every conv is followed by
BatchNorm and ReLU. One unit, from C_in to C_out channels:

    1x1 (C_in -> s1, stride)  ->  1x1 (s1 -> s2)          two-stage squeeze
    1x3 (s2 -> s1)  ->  3x1 (s1 -> s1)                     separable 3x3
    1x1 (s1 -> C_out)                                      expand
    + shortcut: identity, or 1x1 (C_in -> C_out, stride) when the shape changes
    ReLU after the add

    s1 = floor(squeeze_ratio * C_in * r), r = 2 for a stride-2 unit, 1/2 when
    C_in > C_out, else 1;  s2 = floor(squeeze2_ratio * s1)

With the defaults this is exactly pytorchcv's `sqnxt23_*` (the rule rd = 1, 4, 2
of its code; 1x3 before 3x1 in every unit; channels scaled by int(c * width)).
`groups` groups the first 1x1 and the separable pair, as the authors' grouped
1.0-G-SqNxt-23. `bias=False` drops the conv and FC biases, as the authors' Caffe
files do (their BatchNorm + Scale layers hold the scale and offset).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from squeezejax.errors import UserError
from squeezejax.spec import LayerCost, is_number, not_allowed, pool_output_size, totals


@dataclasses.dataclass(frozen=True)
class ConvDims:
  name: str
  in_channels: int
  out_channels: int
  kernel: tuple[int, int]
  stride: int = 1
  groups: int = 1

  def weights(self) -> int:
    return self.kernel[0] * self.kernel[1] * self.in_channels // self.groups * self.out_channels


@dataclasses.dataclass(frozen=True)
class UnitDims:
  """One SqueezeNeXt unit: its five main-branch convs and its optional projection."""
  name: str
  in_channels: int
  out_channels: int
  stride: int
  convs: tuple[ConvDims, ...]
  projection: ConvDims | None


@dataclasses.dataclass(frozen=True)
class SqueezeNeXtSpec:
  """One point of the SqueezeNeXt design space."""
  family: ClassVar[str] = 'squeezenext'
  head: ClassVar[str] = 'fc'  # the classifier's parameters (fine-tuning, linear probes)
  width: float = dataclasses.field(default=1.0, metadata={'label': 'width'})
  depths: tuple[int, ...] = dataclasses.field(default=(6, 6, 8, 1), metadata={'label': 'depths'})
  stage_channels: tuple[int, ...] = (32, 64, 128, 256)
  stem_channels: int = 64
  stem_kernel: int = 7
  stem_stride: int = 2
  stem_padding: int = 1
  stem_pool: bool = True  # the 3x3/2 max pool after the stem
  head_channels: int = 128
  squeeze_ratio: float = dataclasses.field(default=0.5, metadata={'label': 'SR'})
  squeeze2_ratio: float = 0.5
  groups: int = 1
  bias: bool = True  # conv and FC biases (pytorchcv), or none (the authors' Caffe files)
  num_classes: int = 1000
  in_channels: int = 3

  def __post_init__(self):
    # Lists from JSON or a config become tuples, so that specs compare and hash.
    for field in ('depths', 'stage_channels'):
      if isinstance(getattr(self, field), list):
        object.__setattr__(self, field, tuple(getattr(self, field)))
    self.validate()

  # -- validation -----------------------------------------------------------------------

  def validate(self) -> None:
    bad = not_allowed
    def integer(v, lo):
      return not isinstance(v, bool) and isinstance(v, int) and v >= lo

    for field in ('stem_channels', 'stem_kernel', 'stem_stride', 'head_channels', 'groups',
                  'num_classes', 'in_channels'):
      if not integer(getattr(self, field), 1):
        bad(field, getattr(self, field), 'an integer >= 1')
    if not integer(self.stem_padding, 0):
      bad('stem_padding', self.stem_padding, 'an integer >= 0')
    for field in ('depths', 'stage_channels'):
      value = getattr(self, field)
      if not isinstance(value, tuple) or not value or not all(integer(v, 1) for v in value):
        bad(field, value, 'a non-empty list of integers >= 1')
    if len(self.depths) != len(self.stage_channels):
      raise UserError(f'depths={list(self.depths)} and stage_channels='
                      f'{list(self.stage_channels)} are not allowed together: expected one '
                      'depth per stage')
    for field in ('width', 'squeeze_ratio', 'squeeze2_ratio'):
      value = getattr(self, field)
      if not is_number(value) or value <= 0 or (field != 'width' and value > 1):
        bad(field, value, 'a number > 0' if field == 'width' else 'a number in (0, 1]')
    for field in ('stem_pool', 'bias'):
      if not isinstance(getattr(self, field), bool):
        bad(field, getattr(self, field), 'true or false')
    if self.scaled(min(self.stage_channels)) < 1:
      bad('width', self.width, f'a number large enough for {min(self.stage_channels)} channels')
    for unit in self.units():
      for conv in unit.convs:
        if conv.in_channels % conv.groups or conv.out_channels % conv.groups:
          raise UserError(
              f'groups={self.groups} is not allowed: {unit.name} {conv.name} maps '
              f'{conv.in_channels} -> {conv.out_channels} channels; expected a divisor of both')

  # -- shapes ---------------------------------------------------------------------------

  @property
  def default_image_size(self) -> int:
    """ImageNet's 224 px, or 32 px for a stride-1 stem (the small inputs it is for)."""
    return 224 if self.stem_stride > 1 else 32

  def scaled(self, channels: int) -> int:
    return channels if self.width == 1 else int(channels * self.width)

  def _squeeze(self, x: float) -> int:
    return max(1, math.floor(x + 1e-9))

  def units(self) -> tuple[UnitDims, ...]:
    units, c = [], self.scaled(self.stem_channels)
    for i, (depth, channels) in enumerate(zip(self.depths, self.stage_channels)):
      out = self.scaled(channels)
      for j in range(depth):
        stride = 2 if j == 0 and i > 0 else 1
        r = 2 if stride == 2 else (0.5 if c > out else 1)
        s1 = self._squeeze(self.squeeze_ratio * c * r)
        s2 = self._squeeze(self.squeeze2_ratio * s1)
        g = self.groups
        convs = (ConvDims('squeeze1', c, s1, (1, 1), stride, g),
                 ConvDims('squeeze2', s1, s2, (1, 1)),
                 ConvDims('conv1x3', s2, s1, (1, 3), 1, g),
                 ConvDims('conv3x1', s1, s1, (3, 1), 1, g),
                 ConvDims('expand', s1, out, (1, 1)))
        projection = (ConvDims('projection', c, out, (1, 1), stride)
                      if stride != 1 or c != out else None)
        units.append(UnitDims(f'stage{i + 1}_unit{j + 1}', c, out, stride, convs, projection))
        c = out
    return tuple(units)

  def conv_params(self, conv: ConvDims) -> int:
    """Weights, the bias (if any) and BatchNorm's scale and offset."""
    return conv.weights() + (conv.out_channels if self.bias else 0) + 2 * conv.out_channels

  def feature_strides(self) -> dict[str, int]:
    """The stride of each named feature map (see `model.features`)."""
    stride = self.stem_stride
    strides = {'stem': stride}
    stride *= 2 if self.stem_pool else 1
    for i in range(len(self.depths)):
      stride *= 2 if i > 0 else 1
      strides[f'stage{i + 1}'] = stride
    strides['head'] = stride
    return strides

  def _spatial_sizes(self, image_size: int) -> dict[str, int] | None:
    h = (image_size + 2 * self.stem_padding - self.stem_kernel) // self.stem_stride + 1
    if h < 1:
      return None
    sizes = {'stem': h}
    if self.stem_pool:
      if h < 3:
        return None
      h = pool_output_size(h)
      sizes['pool'] = h
    for unit in self.units():
      h = (h - 1) // unit.stride + 1
      sizes[unit.name] = h
    return sizes

  def min_image_size(self) -> int:
    size = 1
    while self._spatial_sizes(size) is None:
      size += 1
    return size

  def check_image_size(self, image_size: int) -> None:
    if (isinstance(image_size, bool) or not isinstance(image_size, int)
        or self._spatial_sizes(image_size) is None):
      raise UserError(f'image_size={image_size!r} is too small for this SqueezeNeXt: '
                      f'expected an integer >= {self.min_image_size()}')

  # -- cost -----------------------------------------------------------------------------

  def layers(self, image_size: int | None = None) -> tuple[LayerCost, ...]:
    image_size = image_size or self.default_image_size
    self.check_image_size(image_size)
    sizes = self._spatial_sizes(image_size)
    k, stem = self.stem_kernel, self.scaled(self.stem_channels)
    stem_conv = ConvDims('stem', self.in_channels, stem, (k, k), self.stem_stride)
    h = sizes['stem']
    rows = [LayerCost('stem', 'conv', (h, h, stem), self.conv_params(stem_conv),
                      h * h * stem_conv.weights(), kernel=f'{k}x{k}/{self.stem_stride}')]
    if self.stem_pool:
      h = sizes['pool']
      rows.append(LayerCost('pool', 'pool', (h, h, stem), kernel='3x3/2'))
    for unit in self.units():
      h = sizes[unit.name]
      convs = unit.convs + ((unit.projection,) if unit.projection else ())
      rows.append(LayerCost(
          unit.name, 'unit', (h, h, unit.out_channels), sum(map(self.conv_params, convs)),
          h * h * sum(c.weights() for c in convs), s1x1=unit.convs[0].out_channels,
          kernel=f'/{unit.stride}' if unit.stride > 1 else '',
          bypass='projection' if unit.projection else 'identity'))
    c = self.units()[-1].out_channels
    head = ConvDims('head', c, self.scaled(self.head_channels), (1, 1))
    rows.append(LayerCost('head', 'conv', (h, h, head.out_channels), self.conv_params(head),
                          h * h * head.weights(), kernel='1x1/1'))
    c, n = head.out_channels, self.num_classes
    rows.append(LayerCost('avgpool', 'avgpool', (1, 1, c), kernel=f'{h}x{h}/1'))
    rows.append(LayerCost('fc', 'fc', (1, 1, n), c * n + (n if self.bias else 0), c * n))
    return tuple(rows)

  def cost(self, image_size: int | None = None) -> dict[str, Any]:
    return totals(self.layers(image_size), image_size or self.default_image_size)

  def describe(self) -> str:
    return (f'SqueezeNeXt width {self.width:g}, depths {list(self.depths)}, squeeze_ratio '
            f'{self.squeeze_ratio:g}, groups {self.groups}, '
            f'{"with" if self.bias else "no"} biases, {self.num_classes} classes')

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    return {'family': self.family, **d, 'depths': list(self.depths),
            'stage_channels': list(self.stage_channels)}


_V5 = (2, 4, 14, 1)
PRESETS = {
    # pytorchcv's sqnxt23_w1 ... sqnxt23v5_w2 (counts include conv and FC biases).
    'squeezenext_1.0_23': dict(),
    'squeezenext_1.0_23v5': dict(depths=_V5),
    'squeezenext_1.5_23': dict(width=1.5),
    'squeezenext_1.5_23v5': dict(width=1.5, depths=_V5),
    'squeezenext_2.0_23': dict(width=2.0),
    'squeezenext_2.0_23v5': dict(width=2.0, depths=_V5),
    # The authors' Caffe 1.0-SqNxt-23 and grouped 1.0-G-SqNxt-23: no biases (their
    # 7x7 stem is unpadded at 227 px, which changes no count).
    'squeezenext_caffe_1.0_23': dict(bias=False, stem_padding=0),
    'squeezenext_caffe_1.0_G_23': dict(bias=False, stem_padding=0, groups=2),
    # 28-32 px, 10 classes: a 3x3 stride-1 stem (28 -> 28 -> pool 14 -> 7 -> 4 -> 2).
    'squeezenext_small': dict(stem_kernel=3, stem_stride=1, num_classes=10),
}
