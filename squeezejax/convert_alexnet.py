"""torchvision AlexNet weights <-> squeezejax parameters (the `alexnet` preset).

  squeezejax convert --from=alexnet-owt-7be5be79.pth --out=models/alexnet

torchvision's `alexnet` is the preset of the same name (layout 'torchvision'):

    features.{0,3,6,8,10}   <-> convs/{0..4}      weight (O, I, H, W) <-> kernel (H, W, I, O)
    classifier.{1,4,6}      <-> fc6, fc7, fc8     weight (O, I)       <-> kernel (I, O)

torch flattens the 6x6x256 map before fc6 in (C, H, W) order, squeezejax (NHWC)
in (H, W, C) order, so fc6's input rows are permuted on the way in and out.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from squeezejax import convert, families
from squeezejax.errors import UserError

CONV_KEYS = ('features.0', 'features.3', 'features.6', 'features.8', 'features.10')
FC_KEYS = {'fc6': 'classifier.1', 'fc7': 'classifier.4', 'fc8': 'classifier.6'}


def is_alexnet(state_dict: Mapping[str, Any]) -> bool:
  return 'classifier.6.weight' in state_dict and 'features.10.weight' in state_dict


def torchvision_spec(num_classes: int = 1000):
  return families.preset('alexnet', num_classes=num_classes)


def check_spec(spec) -> None:
  reference = torchvision_spec(spec.num_classes)
  if spec.family != 'alexnet' or spec.layout != 'torchvision' or (
      spec.in_channels, spec.fc_width) != (reference.in_channels, reference.fc_width):
    raise UserError(f'{spec.describe()} is not torchvision\'s alexnet (expected layout '
                    'torchvision, 3 input channels, fc_width 4096)')


def torch_shapes(spec) -> dict[str, tuple[int, ...]]:
  shapes = {}
  for key, conv in zip(CONV_KEYS, spec.convs()):
    shapes[f'{key}.weight'] = (conv.filters, conv.in_channels, conv.kernel, conv.kernel)
    shapes[f'{key}.bias'] = (conv.filters,)
  fan_in = spec.fc_in_features()
  for name, out in (('fc6', spec.fc_width), ('fc7', spec.fc_width), ('fc8', spec.num_classes)):
    shapes[f'{FC_KEYS[name]}.weight'] = (out, fan_in)
    shapes[f'{FC_KEYS[name]}.bias'] = (out,)
    fan_in = out
  return shapes


def _fc6_rows(spec) -> tuple[int, int, int]:
  side = spec.pooled_size
  return spec.convs()[-1].filters, side, side


def from_torchvision(state_dict: Mapping[str, Any]) -> tuple[Any, dict]:
  """(spec, params pure dict) from a torchvision AlexNet state_dict (any class count)."""
  state_dict = {k: convert._to_numpy(v) for k, v in state_dict.items()}  # pylint: disable=protected-access
  if 'classifier.6.weight' not in state_dict:
    raise UserError('state_dict has no key classifier.6.weight: not a torchvision AlexNet')
  spec = torchvision_spec(int(state_dict['classifier.6.weight'].shape[0]))
  convert._check_keys_and_shapes(state_dict, torch_shapes(spec), 'alexnet')  # pylint: disable=protected-access
  for key, value in state_dict.items():
    if value.dtype.kind != 'f':
      raise UserError(f'{key} has dtype {value.dtype}: expected floating-point weights')
  f32 = lambda k: state_dict[k].astype(np.float32)
  params: dict = {'convs': {}}
  for i, key in enumerate(CONV_KEYS):
    params['convs'][i] = {'kernel': f32(f'{key}.weight').transpose(2, 3, 1, 0),
                          'bias': f32(f'{key}.bias')}
  for name, key in FC_KEYS.items():
    w = f32(f'{key}.weight')
    if name == 'fc6':  # (out, C*H*W) -> (H*W*C, out)
      c, h, wd = _fc6_rows(spec)
      w = w.reshape(-1, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, -1)
    else:
      w = w.T
    params[name] = {'kernel': np.ascontiguousarray(w), 'bias': f32(f'{key}.bias')}
  return spec, params


def to_torchvision(spec, params: Mapping) -> dict[str, np.ndarray]:
  """A torchvision AlexNet state_dict (numpy float32) from squeezejax parameters."""
  check_spec(spec)
  state_dict = {}
  for i, key in enumerate(CONV_KEYS):
    node = params['convs'][i]
    state_dict[f'{key}.weight'] = np.array(node['kernel'], np.float32).transpose(3, 2, 0, 1)
    state_dict[f'{key}.bias'] = np.array(node['bias'], np.float32)
  for name, key in FC_KEYS.items():
    w = np.array(params[name]['kernel'], np.float32)
    if name == 'fc6':  # (H*W*C, out) -> (out, C*H*W)
      c, h, wd = _fc6_rows(spec)
      w = w.reshape(h, wd, c, -1).transpose(3, 2, 0, 1).reshape(w.shape[-1], -1)
    else:
      w = w.T
    state_dict[f'{key}.weight'] = np.ascontiguousarray(w)
    state_dict[f'{key}.bias'] = np.array(params[name]['bias'], np.float32)
  convert._check_keys_and_shapes(state_dict, torch_shapes(spec), 'alexnet')  # pylint: disable=protected-access
  return state_dict
