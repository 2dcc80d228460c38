"""The model families and their named presets: the one registry every command reads.

  family        spec (pure Python: shapes and cost)         module (Flax NNX)
  squeezenet    squeezejax.spec.SqueezeNetSpec              squeezejax.model:SqueezeNet
  squeezenext   squeezejax.spec_squeezenext.SqueezeNeXtSpec squeezejax.model_squeezenext:SqueezeNeXt
  alexnet       squeezejax.spec_alexnet.AlexNetSpec         squeezejax.model_alexnet:AlexNet

A preset is a family plus some of its fields, registered by name (as timm and
torchvision name their models); `squeezejax summary --list` lists them. A new
family is a spec dataclass (fields; `family` and `head` class attributes;
`layers`, `cost`, `check_image_size`, `default_image_size`, `describe`,
`to_dict`), a module built from it (`__call__(x, *, dropout_key=None,
train=False, return_features=False)`) and one `register` call here: the trainer,
sweeps and reports do not change.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from squeezejax import spec as squeezenet_spec
from squeezejax import spec_alexnet, spec_squeezenext
from squeezejax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  spec: type
  module: str  # 'package.module:Class', imported only when a network is built
  presets: dict[str, dict[str, Any]]

  def fields(self) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(self.spec))


FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, str] = {}  # preset name -> family name


def register(family: Family) -> None:
  clash = sorted(set(family.presets) & set(PRESETS))
  if family.name in FAMILIES or clash:
    raise ValueError(f'family {family.name!r} or presets {clash} are already registered')
  FAMILIES[family.name] = family
  PRESETS.update({name: family.name for name in family.presets})


register(Family('squeezenet', squeezenet_spec.SqueezeNetSpec, 'squeezejax.model:SqueezeNet',
                squeezenet_spec.PRESETS))
register(Family('squeezenext', spec_squeezenext.SqueezeNeXtSpec,
                'squeezejax.model_squeezenext:SqueezeNeXt', spec_squeezenext.PRESETS))
register(Family('alexnet', spec_alexnet.AlexNetSpec, 'squeezejax.model_alexnet:AlexNet',
                spec_alexnet.PRESETS))


def family_of(model: str) -> Family:
  """The family of a preset name."""
  if model not in PRESETS:
    raise UserError(f'model={model!r} is not allowed: expected one of {", ".join(PRESETS)} '
                    '(`squeezejax summary --list` lists them)')
  return FAMILIES[PRESETS[model]]


def preset_fields(model: str) -> dict[str, Any]:
  """Every field of a named preset (unvalidated: callers may change some first)."""
  family = family_of(model)
  defaults = {f.name: f.default for f in dataclasses.fields(family.spec)}
  return {**defaults, **family.presets[model]}


def check_fields(family: Family, fields, where: str = '') -> None:
  unknown = sorted(set(fields) - set(family.fields()))
  if unknown:
    raise UserError(f'{where}{unknown[0]} is not a field of the {family.name} family: '
                    f'expected one of {", ".join(family.fields())}')


def preset(model: str, **overrides) -> Any:
  """A named preset of any family, with some of its fields overridden."""
  family = family_of(model)
  check_fields(family, overrides)
  return family.spec(**{**preset_fields(model), **overrides})


def spec_from_dict(data: dict[str, Any]) -> Any:
  """A spec from its `to_dict()` (a model.json written before families is a SqueezeNet)."""
  data = dict(data)
  name = data.pop('family', 'squeezenet')
  if name not in FAMILIES:
    raise UserError(f'family={name!r} is not allowed: expected one of {", ".join(FAMILIES)}')
  check_fields(FAMILIES[name], data)
  return FAMILIES[name].spec(**data)


def field_types() -> dict[str, type]:
  """Every family's fields and their types (a field two families share has one type)."""
  types: dict[str, type] = {}
  for family in FAMILIES.values():
    for name, kind in typing.get_type_hints(family.spec).items():
      if name in family.fields():
        kind = typing.get_origin(kind) or kind  # tuple[int, ...] -> tuple
        if types.setdefault(name, kind) is not kind:
          raise TypeError(f'field {name!r} is {types[name]} in one family, {kind} in another')
  return types


def listing() -> list[dict[str, Any]]:
  """One row per preset: name, family, parameters and MACs at its default image size."""
  rows = []
  for name, family in PRESETS.items():
    spec = preset(name)
    cost = spec.cost()
    rows.append({'model': name, 'family': family, 'params': cost['params'],
                 'size_mib': cost['size_mib'], 'macs': cost['macs'],
                 'image_size': cost['image_size']})
  return rows


# Every family's fields: the columns of sweep records and reports.
METAPARAMETERS = tuple(field_types())
