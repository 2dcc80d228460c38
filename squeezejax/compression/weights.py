"""A network's parameters <-> the Deep Compression file, and compressed model directories.

The stored layers are the spec's convolutions in the order of `convert.torch_shapes`
(conv1; per fire squeeze, expand1x1, expand3x3[, bypass_conv]; conv10), which is
also the prototxt order of the authors' SqueezeNet v1.0. Kernels are stored OIHW
(Caffe's and PyTorch's layout) and are HWIO in squeezejax.

A compressed model directory holds model.json (spec and meta, whose `compression`
entry gives the bits and the file) and the .net file; `load` decodes it, so predict,
eval, export and finetune read it like any other model directory.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from squeezejax import convert, files
from squeezejax import spec as spec_lib
from squeezejax.compression import format as format_lib
from squeezejax.errors import UserError

NET_FILE = 'model.net'
# The authors' compressed SqueezeNet (songhan/SqueezeNet-Deep-Compression): Caffe
# SqueezeNet v1.0, whose deploy prototxt pads conv10 by 1; 8-bit codes, 4-bit indices.
AUTHORS_SPEC = dict(layout='v1.0', num_classes=1000, conv10_pad=1, init='caffe')
AUTHORS_BITS = dict(code_bits=8, index_bits=4, huffman=False)
# Caffe's ImageNet transform: 256x256 resize, 227 centre crop, BGR, mean subtracted
# from 0..255 pixels (no scaling).
CAFFE_PREPROCESSING = {'kind': 'caffe', 'resize': 256, 'image_size': 227,
                       'mean_bgr': [104.0, 117.0, 123.0]}
CAFFE_NAMES = {'squeeze': 'conv1x1_1', 'expand1x1': 'conv1x1_2', 'expand3x3': 'conv3x3_2'}


def authors_spec() -> spec_lib.SqueezeNetSpec:
  return spec_lib.preset('squeezenet1_0', **AUTHORS_SPEC)


def layers(spec: spec_lib.SqueezeNetSpec) -> list[format_lib.Layer]:
  return [format_lib.Layer(_name(path), shape) for _, path, shape in convert._convs(spec)]  # pylint: disable=protected-access


def _name(path: tuple) -> str:
  return '/'.join(f'fire{p + 2}' if isinstance(p, int) else p for p in path if p != 'fires')


def caffe_name(name: str) -> str:
  """'fire2/squeeze' -> 'fire2/conv1x1_1' (the prototxt's names), 'conv10' -> 'conv10'."""
  fire, _, conv = name.partition('/')
  return f'{fire}/{CAFFE_NAMES.get(conv, conv)}' if conv else name


def _node(params: Mapping, path: tuple):
  for part in path:
    params = params[part]
  return params


def to_params(spec: spec_lib.SqueezeNetSpec, encoded: list[format_lib.Encoded]) -> dict:
  """squeezejax parameters (a pure dict, HWIO float32 kernels) of decoded layers."""
  params: dict = {}
  for (_, path, _), e in zip(convert._convs(spec), encoded):  # pylint: disable=protected-access
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = {'kernel': e.weights().transpose(2, 3, 1, 0).copy(), 'bias': e.bias.copy()}
  return params


def kernels_oihw(spec: spec_lib.SqueezeNetSpec, params: Mapping) -> list[tuple[np.ndarray,
                                                                               np.ndarray]]:
  """(OIHW float32 weights, bias) of every stored layer, in file order."""
  out = []
  for _, path, _ in convert._convs(spec):  # pylint: disable=protected-access
    node = _node(params, path)
    out.append((np.asarray(node['kernel'], np.float32).transpose(3, 2, 0, 1),
                np.asarray(node['bias'], np.float32)))
  return out


def read_file(path: str, spec: spec_lib.SqueezeNetSpec, code_bits: int = 8,
              index_bits: int = 4, huffman: bool = False) -> list[format_lib.Encoded]:
  if not os.path.isfile(path):
    raise UserError(f'{path!r}: no such file')
  with open(path, 'rb') as f:
    data = f.read()
  return format_lib.read(data, layers(spec), code_bits, index_bits, huffman, what=repr(path))


# -- compressed model directories ------------------------------------------------------


def save(directory: str, spec: spec_lib.SqueezeNetSpec, encoded: list[format_lib.Encoded],
         meta: dict[str, Any], *, code_bits: int, index_bits: int, huffman: bool) -> int:
  """Writes DIRECTORY/model.net and model.json; returns the file's size in bytes."""
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top (orbax)
  data = format_lib.write(encoded, code_bits, index_bits, huffman)
  os.makedirs(directory, exist_ok=True)
  files.write_atomic(os.path.join(directory, NET_FILE), data)
  meta = {**meta, 'compression': {'file': NET_FILE, 'code_bits': code_bits,
                                  'index_bits': index_bits, 'huffman': huffman,
                                  'bytes': len(data)}}
  checkpoint.write_model_json(directory, spec, meta)
  return len(data)


def is_compressed(meta: Mapping[str, Any]) -> bool:
  return bool(meta.get('compression'))


def load_encoded(directory: str, spec: spec_lib.SqueezeNetSpec, meta: Mapping[str, Any]
                 ) -> list[format_lib.Encoded]:
  c = meta['compression']
  return read_file(os.path.join(directory, c['file']), spec, c['code_bits'], c['index_bits'],
                   c['huffman'])


def load(directory: str, spec: spec_lib.SqueezeNetSpec, meta: Mapping[str, Any]) -> dict:
  """The decompressed parameters (a pure dict of numpy arrays) of a compressed directory."""
  return to_params(spec, load_encoded(directory, spec, meta))
