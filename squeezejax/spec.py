"""The design-space spec: SqueezeNet metaparameters -> per-layer shapes and cost.

Pure Python, no JAX. This is the single source of truth for channel counts: the
Flax module, the cost table, `squeezejax summary` and the weight converter all
read a `SqueezeNetSpec`; nothing else recomputes them.

Notation follows Iandola et al. 2016 (arXiv 1602.07360), section 5. Fire modules
are numbered i = 0..7 (fire2..fire9):

    e_i      = base_e + incr_e * floor(i / freq)
    e_i,3x3  = round(pct_3x3 * e_i),  e_i,1x1 = e_i - e_i,3x3
    s_i      = max(1, round(squeeze_ratio * e_i))

Rounding rule (the paper gives none): round half up, applied to the 3x3 share
first so that e_1x1 + e_3x3 == e_i exactly; the squeeze layer is never narrower
than one filter. pct_3x3 = 0 or 1 (or a share that rounds to zero) builds the
module without the empty expand branch instead of a zero-width convolution.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from squeezejax.errors import UserError

LAYOUTS = ('v1.0', 'v1.1', 'small')
BYPASSES = ('none', 'simple', 'complex')
INITS = ('caffe', 'torchvision')
NUM_FIRE = 8
# Fire modules (0-based) that get each kind of bypass in the paper (Figure 2).
SIMPLE_BYPASS_FIRES = (1, 3, 5, 7)  # fire3, fire5, fire7, fire9
COMPLEX_BYPASS_FIRES = (0, 2, 4, 6)  # fire2, fire4, fire6, fire8



def not_allowed(field: str, value, allowed: str):
  """The one-line error of every spec's validation: the bad value and what is allowed."""
  raise UserError(f'{field}={value!r} is not allowed: expected {allowed}')


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


@dataclasses.dataclass(frozen=True)
class Conv1:
  filters: int
  kernel: int
  stride: int
  padding: int


# Macro layouts: conv1, and the Fire modules (0-based) after which a 3x3/2 max
# pool sits (a pool also follows conv1 in every layout). conv10 is always 1x1.
_MACRO = {
    # Caffe SqueezeNet v1.0 / torchvision squeezenet1_0.
    'v1.0': dict(conv1=Conv1(96, 7, 2, 0), pool_after=(2, 6)),
    # SqueezeNet v1.1 / torchvision squeezenet1_1.
    'v1.1': dict(conv1=Conv1(64, 3, 2, 0), pool_after=(1, 3)),
    # v1.1 with a stride-1, padded conv1 for 28-64 px inputs (Fashion-MNIST,
    # CIFAR): 28 px -> 28 -> pool 14 -> fire2,3 -> pool 7 -> fire4,5 -> pool 3.
    'small': dict(conv1=Conv1(64, 3, 1, 1), pool_after=(1, 3)),
}
DEFAULT_IMAGE_SIZE = {'v1.0': 224, 'v1.1': 224, 'small': 32}


@dataclasses.dataclass(frozen=True)
class FireDims:
  """Channel counts of one Fire module (and its bypass)."""
  name: str
  in_channels: int
  s1x1: int
  e1x1: int
  e3x3: int
  bypass: str  # 'none' | 'simple' | 'complex' (for this module only)
  batch_norm: bool = False  # BatchNorm (scale, offset) instead of each conv's bias

  @property
  def out_channels(self) -> int:
    return self.e1x1 + self.e3x3

  @property
  def params(self) -> int:
    # A conv's bias, or its BatchNorm's scale and offset: 1 or 2 per output channel.
    c, s, e1, e3 = self.in_channels, self.s1x1, self.e1x1, self.e3x3
    per = 2 if self.batch_norm else 1
    n = c * s + per * s + s * e1 + per * e1 + 9 * s * e3 + per * e3
    if self.bypass == 'complex':
      n += c * self.out_channels + per * self.out_channels
    return n

  def macs_per_pixel(self) -> int:
    c, s, e1, e3 = self.in_channels, self.s1x1, self.e1x1, self.e3x3
    n = c * s + s * e1 + 9 * s * e3
    if self.bypass == 'complex':
      n += c * self.out_channels
    return n


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One row of the Table-1-like summary."""
  name: str
  kind: str  # 'conv' | 'pool' | 'fire' | 'dropout' | 'avgpool' | 'fc' | 'lrn' | 'unit' ...
  output: tuple[int, int, int]  # (height, width, channels)
  params: int = 0
  macs: int = 0
  s1x1: int | None = None
  e1x1: int | None = None
  e3x3: int | None = None
  kernel: str = ''
  bypass: str = ''


@dataclasses.dataclass(frozen=True)
class SqueezeNetSpec:
  """One point of the SqueezeNet design space, in the paper's vocabulary.

  A field's `label` metadata is its short name in figures (the paper's "SR").
  """
  family: ClassVar[str] = 'squeezenet'
  head: ClassVar[str] = 'conv10'  # the classifier's parameters (fine-tuning, linear probes)
  layout: str = 'v1.0'
  base_e: int = 128
  incr_e: int = 128
  pct_3x3: float = dataclasses.field(default=0.5, metadata={'label': '3x3'})
  freq: int = 2
  squeeze_ratio: float = dataclasses.field(default=0.125, metadata={'label': 'SR'})
  bypass: str = 'none'
  num_classes: int = 1000
  in_channels: int = 3
  dropout_rate: float = 0.5
  conv10_relu: bool = True  # the paper's head; see README on 10-class training
  # Zero padding of the 1x1 conv10. Caffe's SqueezeNet v1.0 prototxt has pad: 1 there,
  # so its global average also takes in the border, relu(bias), of a 15x15 map.
  conv10_pad: int = 0
  init: str = 'caffe'
  # BatchNorm after every conv but conv10 (its scale and offset replace the conv's
  # bias): what makes a SqueezeNet train where plain SGD stalls.
  batch_norm: bool = False

  def __post_init__(self):
    self.validate()

  # -- validation -------------------------------------------------------------

  def validate(self) -> None:
    bad = not_allowed
    if self.layout not in LAYOUTS:
      bad('layout', self.layout, f'one of {", ".join(LAYOUTS)}')
    if self.bypass not in BYPASSES:
      bad('bypass', self.bypass, f'one of {", ".join(BYPASSES)}')
    if self.init not in INITS:
      bad('init', self.init, f'one of {", ".join(INITS)}')
    for field in ('base_e', 'freq', 'num_classes', 'in_channels'):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        bad(field, value, 'an integer >= 1')
    if (isinstance(self.conv10_pad, bool) or not isinstance(self.conv10_pad, int)
        or self.conv10_pad < 0):
      bad('conv10_pad', self.conv10_pad, 'an integer >= 0')
    if (isinstance(self.incr_e, bool) or not isinstance(self.incr_e, int)
        or self.incr_e < 0):
      bad('incr_e', self.incr_e, 'an integer >= 0')
    if not _is_number(self.squeeze_ratio) or not 0 < self.squeeze_ratio <= 1:
      bad('squeeze_ratio', self.squeeze_ratio, 'a number in (0, 1]')
    if not _is_number(self.pct_3x3) or not 0 <= self.pct_3x3 <= 1:
      bad('pct_3x3', self.pct_3x3, 'a number in [0, 1]')
    if not _is_number(self.dropout_rate) or not 0 <= self.dropout_rate < 1:
      bad('dropout_rate', self.dropout_rate, 'a number in [0, 1)')
    for field in ('conv10_relu', 'batch_norm'):
      if not isinstance(getattr(self, field), bool):
        bad(field, getattr(self, field), 'true or false')
    if self.bypass != 'none':
      for fire in self.fires():
        if fire.bypass == 'simple' and fire.in_channels != fire.out_channels:
          raise UserError(
              f'bypass={self.bypass!r} is not possible here: {fire.name} '
              f'has {fire.in_channels} input but {fire.out_channels} output '
              'channels and a simple bypass adds them; use freq=2 with '
              'incr_e as in the paper, or bypass=none')

  # -- shapes -----------------------------------------------------------------

  @property
  def conv1(self) -> Conv1:
    return _MACRO[self.layout]['conv1']

  @property
  def pool_after(self) -> tuple[int, ...]:
    """Fire indices (0-based) followed by a 3x3/2 max pool."""
    return _MACRO[self.layout]['pool_after']

  @property
  def default_image_size(self) -> int:
    return DEFAULT_IMAGE_SIZE[self.layout]

  def expand_filters(self, i: int) -> int:
    return self.base_e + self.incr_e * (i // self.freq)

  def fires(self) -> tuple[FireDims, ...]:
    """Channel counts of fire2..fire9."""
    fires = []
    c = self.conv1.filters
    for i in range(NUM_FIRE):
      e = self.expand_filters(i)
      e3 = _round_half_up(self.pct_3x3 * e)
      s = max(1, _round_half_up(self.squeeze_ratio * e))
      kind = 'none'
      if self.bypass in ('simple', 'complex') and i in SIMPLE_BYPASS_FIRES:
        kind = 'simple'
      if self.bypass == 'complex' and i in COMPLEX_BYPASS_FIRES:
        kind = 'complex'
      fires.append(FireDims(f'fire{i + 2}', c, s, e - e3, e3, kind, self.batch_norm))
      c = e
    return tuple(fires)

  def feature_strides(self) -> dict[str, int]:
    """The stride of each named feature map (see `model.features`): conv1 after its pool."""
    stride = self.conv1.stride * 2
    strides = {'conv1': stride}
    for i, fire in enumerate(self.fires()):
      strides[fire.name] = stride
      stride *= 2 if i in self.pool_after else 1
    strides['conv10'] = strides[self.fires()[-1].name]
    return strides

  def min_image_size(self) -> int:
    """The smallest square input every layer of this layout accepts."""
    size = 1
    while self._spatial_sizes(size) is None:
      size += 1
    return size

  def _spatial_sizes(self, image_size: int) -> dict[str, int] | None:
    """Output side length after conv1, each pool and each fire; None if too small."""
    c1 = self.conv1
    h = image_size + 2 * c1.padding
    if h < c1.kernel:
      return None
    h = (h - c1.kernel) // c1.stride + 1
    sizes = {'conv1': h}
    names = iter([f'maxpool{i + 2}' for i in self.pool_after])
    # conv1 -> pool -> fires, with a pool after each fire in pool_after.
    if h < 3:
      return None
    h = pool_output_size(h)
    sizes['maxpool1'] = h
    for i in range(NUM_FIRE):
      sizes[f'fire{i + 2}'] = h
      if i in self.pool_after:
        if h < 3:
          return None
        h = pool_output_size(h)
        sizes[next(names)] = h
    return sizes

  def check_image_size(self, image_size: int) -> None:
    if (isinstance(image_size, bool) or not isinstance(image_size, int)
        or self._spatial_sizes(image_size) is None):
      raise UserError(
          f'image_size={image_size!r} is too small for layout {self.layout!r}: '
          f'expected an integer >= {self.min_image_size()}')

  # -- cost -------------------------------------------------------------------

  def layers(self, image_size: int | None = None) -> tuple[LayerCost, ...]:
    """Per-layer rows of the Table-1-like summary, in forward order."""
    image_size = image_size or self.default_image_size
    self.check_image_size(image_size)
    sizes = self._spatial_sizes(image_size)
    c1 = self.conv1
    rows = []
    h = sizes['conv1']
    p = c1.kernel * c1.kernel * self.in_channels * c1.filters
    per = 2 if self.batch_norm else 1  # bias, or BatchNorm scale and offset
    rows.append(LayerCost('conv1', 'conv', (h, h, c1.filters), p + per * c1.filters,
                          h * h * p, kernel=f'{c1.kernel}x{c1.kernel}/{c1.stride}'))
    h = sizes['maxpool1']
    rows.append(LayerCost('maxpool1', 'pool', (h, h, c1.filters), kernel='3x3/2'))
    channels = c1.filters
    pool_names = iter(f'maxpool{i + 2}' for i in self.pool_after)
    for i, fire in enumerate(self.fires()):
      h = sizes[fire.name]
      rows.append(LayerCost(
          fire.name, 'fire', (h, h, fire.out_channels), fire.params,
          h * h * fire.macs_per_pixel(), fire.s1x1, fire.e1x1, fire.e3x3,
          bypass=fire.bypass))
      channels = fire.out_channels
      if i in self.pool_after:
        name = next(pool_names)
        h = sizes[name]
        rows.append(LayerCost(name, 'pool', (h, h, channels), kernel='3x3/2'))
    rows.append(LayerCost('dropout', 'dropout', (h, h, channels)))
    n = self.num_classes
    h += 2 * self.conv10_pad
    rows.append(LayerCost('conv10', 'conv', (h, h, n), channels * n + n,
                          h * h * channels * n, kernel='1x1/1'))
    rows.append(LayerCost('avgpool10', 'avgpool', (1, 1, n), kernel=f'{h}x{h}/1'))
    return tuple(rows)

  def cost(self, image_size: int | None = None) -> dict[str, Any]:
    """Totals: parameters, float32 size, MACs and activation memory per image."""
    return totals(self.layers(image_size), image_size or self.default_image_size)

  def describe(self) -> str:
    return (f'layout {self.layout}, base_e {self.base_e}, incr_e {self.incr_e}, '
            f'pct_3x3 {self.pct_3x3:g}, freq {self.freq}, squeeze_ratio '
            f'{self.squeeze_ratio:g}, bypass {self.bypass}, {self.num_classes} classes'
            + (', batch_norm' if self.batch_norm else ''))

  def to_dict(self) -> dict[str, Any]:
    return {'family': self.family, **dataclasses.asdict(self)}


def totals(rows, image_size: int) -> dict[str, Any]:
  """Any family's cost from its layer rows: parameters, float32 MiB, MACs, activations."""
  params = sum(r.params for r in rows)
  size_mib = params * 4 / 2**20
  return {
      'params': params,
      'size_mib': size_mib,
      'size_label_mb': paper_size_label(size_mib),
      'macs': sum(r.macs for r in rows),
      'activation_bytes': sum(math.prod(r.output) for r in rows) * 4,
      'image_size': image_size,
  }


def pool_output_size(h: int, kernel: int = 3, stride: int = 2) -> int:
  """Max pool output size rounding up, as Caffe and torchvision (ceil_mode)."""
  return -(-(h - kernel) // stride) + 1


def paper_size_label(size_mib: float) -> float:
  """The paper's MB labels: float32 MiB rounded up to two significant digits.

  4.76 -> 4.8, 7.50 -> 7.6, 12.99 -> 13, 18.47 -> 19, 23.95 -> 24.
  """
  if size_mib <= 0:
    return 0.0
  scale = 10 ** (1 - math.floor(math.log10(size_mib)))
  return math.ceil(round(size_mib * scale, 6)) / scale


def is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


_is_number = is_number


# -- presets ----------------------------------------------------------------------

PRESETS = {
    'squeezenet1_0': dict(layout='v1.0'),
    'squeezenet1_0_simple': dict(layout='v1.0', bypass='simple'),
    'squeezenet1_0_complex': dict(layout='v1.0', bypass='complex'),
    'squeezenet1_1': dict(layout='v1.1'),
    'squeezenet1_1_simple': dict(layout='v1.1', bypass='simple'),
    'squeezenet1_1_complex': dict(layout='v1.1', bypass='complex'),
    # 28-64 px inputs, 10 classes; the paper's metaparameters otherwise.
    'squeezenet_small': dict(layout='small', num_classes=10),
}


METAPARAMETERS = tuple(f.name for f in dataclasses.fields(SqueezeNetSpec))


def field_label(name: str) -> str:
  """A field's short name in figures and tables ('SR' for squeeze_ratio)."""
  fields = {f.name: f for f in dataclasses.fields(SqueezeNetSpec)}
  return fields[name].metadata.get('label', name) if name in fields else name


def preset_fields(name: str) -> dict[str, Any]:
  """Every field of a named preset (unvalidated: callers may change some first)."""
  if name not in PRESETS:
    raise UserError(f'model={name!r} is not allowed: expected one of {", ".join(PRESETS)}')
  defaults = {f.name: f.default for f in dataclasses.fields(SqueezeNetSpec)}
  return {**defaults, **PRESETS[name]}


def preset(name: str, **overrides) -> SqueezeNetSpec:
  """A named preset with any metaparameter overridden."""
  fields = preset_fields(name)
  for key in overrides:
    if key not in fields:
      raise UserError(f'{key!r} is not a SqueezeNetSpec field: expected one of '
                      f'{", ".join(sorted(fields))}')
  return SqueezeNetSpec(**{**fields, **overrides})
