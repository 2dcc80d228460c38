"""torchvision SqueezeNet weights <-> squeezejax parameters.

  squeezejax convert --from=squeezenet1_1-b8a52dc0.pth --version=1_1 --out=models/sq11

torchvision's `squeezenet1_0` / `squeezenet1_1` are the presets of the same
names (paper metaparameters, ReLU after conv10, ceil-mode pools), so conversion
is a renaming plus a transpose: PyTorch convolutions are OIHW, Flax's HWIO.
The names are those of torchvision's module tree, which `torch_reference` builds
for any spec (bypass_conv included), so the same map serves every spec:

    features.0            <-> conv1
    features.K.{squeeze, expand1x1, expand3x3, bypass_conv}  <-> fires/i/...
                              (K = 3 + i + the pools before fire i)
    classifier.1          <-> conv10
    weight (O, I, H, W)   <-> kernel (H, W, I, O);  bias <-> bias

The number of classes is read from `classifier.1.weight`. Reading `.pth`/`.pt`
needs PyTorch; `.safetensors` and `.npz` files are read without it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from squeezejax import cli, files
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

VERSIONS = {'v1.0': '1_0', 'v1.1': '1_1'}  # layout -> torchvision version
# torchvision's ImageNet evaluation transform (ImageClassification preset).
PREPROCESSING = {
    'kind': 'torchvision',
    'mean': [0.485, 0.456, 0.406],
    'std': [0.229, 0.224, 0.225],
    'resize': 256,
    'image_size': 224,
}
FILE_KINDS = ('.pth', '.pt', '.safetensors', '.npz')
DEEP_COMPRESSION_KIND = '.net'  # the authors' compressed SqueezeNet (Han et al.)


# -- versions and specs ---------------------------------------------------------------


def normalize_version(version: str) -> str:
  """'1_1', '1.1', 'v1.1' or 'squeezenet1_1' -> '1_1'."""
  v = str(version).strip().lower().removeprefix('squeezenet').removeprefix('v')
  v = v.replace('.', '_')
  if v not in VERSIONS.values():
    raise UserError(f'version={version!r} is not allowed: expected 1_0 or 1_1')
  return v


def infer_version(state_dict: Mapping[str, Any]) -> str:
  """1_0 has a 96-filter 7x7 conv1, 1_1 a 64-filter 3x3 one."""
  if 'features.0.weight' not in state_dict:
    raise UserError('state_dict has no key features.0.weight: not a torchvision '
                    'SqueezeNet (keys start with '
                    f'{", ".join(sorted(state_dict)[:3]) or "nothing"})')
  shape = tuple(np.shape(state_dict['features.0.weight']))
  for version in VERSIONS.values():
    if shape == torch_shapes(torchvision_spec(version, 1))['features.0.weight']:
      return version
  raise UserError(f'features.0.weight has shape {shape}: expected (96, 3, 7, 7) '
                  '(squeezenet1_0) or (64, 3, 3, 3) (squeezenet1_1)')


def torchvision_spec(version: str, num_classes: int = 1000) -> spec_lib.SqueezeNetSpec:
  """The squeezejax spec of torchvision's squeezenet{version}."""
  return spec_lib.preset(f'squeezenet{normalize_version(version)}',
                         num_classes=num_classes, init='torchvision')


def spec_version(spec: spec_lib.SqueezeNetSpec) -> str:
  """The torchvision version whose architecture `spec` is, or a UserError."""
  version = VERSIONS.get(spec.layout)
  if version is None:
    raise UserError(f'layout={spec.layout!r} has no torchvision counterpart: '
                    'expected v1.0 or v1.1')
  reference = torchvision_spec(version, spec.num_classes)
  if spec.fires() != reference.fires() or spec.in_channels != reference.in_channels:
    raise UserError(
        'this spec is not torchvision\'s squeezenet' + version + ' (expected the paper\'s '
        'metaparameters, bypass=none, in_channels=3); torchvision has no module for it')
  if spec.conv10_pad:
    raise UserError(f'conv10_pad={spec.conv10_pad}: torchvision\'s squeezenet does not pad '
                    'conv10 (Caffe v1.0 does), so its logits would differ; expected 0')
  if not spec.conv10_relu:
    raise UserError('conv10_relu=False: torchvision\'s squeezenet has a ReLU after '
                    'conv10, so its logits would differ; expected conv10_relu=True')
  return version


def _convs(spec: spec_lib.SqueezeNetSpec) -> list[tuple[str, tuple, tuple[int, ...]]]:
  """(torch module prefix, squeezejax parameter path, OIHW weight shape) of every conv,
  in state_dict order. Fire i sits at index 3 (after conv1, ReLU, pool) + i + the pools
  before it in `features`."""
  c1 = spec.conv1
  convs = [('features.0', ('conv1',), (c1.filters, spec.in_channels, c1.kernel, c1.kernel))]
  for i, fire in enumerate(spec.fires()):
    k = 3 + i + sum(p < i for p in spec.pool_after)
    bypass = fire.out_channels if fire.bypass == 'complex' else 0
    for name, out, cin, size in (('squeeze', fire.s1x1, fire.in_channels, 1),
                                 ('expand1x1', fire.e1x1, fire.s1x1, 1),
                                 ('expand3x3', fire.e3x3, fire.s1x1, 3),
                                 ('bypass_conv', bypass, fire.in_channels, 1)):
      if out:  # a branch with no filters is not built
        convs.append((f'features.{k}.{name}', ('fires', i, name), (out, cin, size, size)))
  convs.append(('classifier.1', ('conv10',),
                (spec.num_classes, spec.fires()[-1].out_channels, 1, 1)))
  return convs


def torch_shapes(spec: spec_lib.SqueezeNetSpec) -> dict[str, tuple[int, ...]]:
  """The torch twin's state_dict key -> shape, in order, from the spec."""
  shapes = {}
  for prefix, _, shape in _convs(spec):
    shapes[f'{prefix}.weight'] = shape
    shapes[f'{prefix}.bias'] = shape[:1]
  return shapes


# -- conversion ----------------------------------------------------------------------


def from_torch_state_dict(spec: spec_lib.SqueezeNetSpec, state_dict: Mapping[str, Any],
                          what: str = 'this spec') -> dict:
  """squeezejax parameters (a pure dict) from a state_dict of the torch twin of `spec`."""
  state_dict = {k: _to_numpy(v) for k, v in state_dict.items()}
  _check_keys_and_shapes(state_dict, torch_shapes(spec), what)
  for key, value in state_dict.items():  # float16/64 convert to float32; others would not
    if value.dtype.kind != 'f':
      raise UserError(f'{key} has dtype {value.dtype}: expected floating-point weights '
                      '(a quantized or corrupted state_dict cannot be cast without a word)')
  params: dict = {}
  for prefix, path, _ in _convs(spec):
    node = params
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = {
        'kernel': state_dict[f'{prefix}.weight'].astype(np.float32).transpose(2, 3, 1, 0),
        'bias': state_dict[f'{prefix}.bias'].astype(np.float32)}
  return params


def to_torch_state_dict(spec: spec_lib.SqueezeNetSpec, params: Mapping,
                        what: str = 'this spec') -> dict[str, np.ndarray]:
  """The torch twin's state_dict (numpy float32 arrays) of squeezejax parameters."""
  state_dict = {}
  for prefix, path, _ in _convs(spec):
    node = params
    for part in path:
      node = node[part]
    # Copies, so that torch.from_numpy gets writable arrays even from JAX ones.
    state_dict[f'{prefix}.weight'] = np.array(node['kernel'], np.float32).transpose(3, 2, 0, 1)
    state_dict[f'{prefix}.bias'] = np.array(node['bias'], np.float32)
  _check_keys_and_shapes(state_dict, torch_shapes(spec), what)
  return state_dict


def from_torchvision(state_dict: Mapping[str, Any], version: str | None = None
                     ) -> tuple[spec_lib.SqueezeNetSpec, dict]:
  """(spec, params pure dict) from a torchvision SqueezeNet state_dict.

  `version` ('1_0' or '1_1') defaults to the one conv1's shape says; the number
  of classes is that of `classifier.1.weight`.
  """
  state_dict = {k: _to_numpy(v) for k, v in state_dict.items()}
  found = infer_version(state_dict)
  version = normalize_version(version) if version else found
  if version != found:  # say so before listing the 1_0/1_1 key differences
    expected = torch_shapes(torchvision_spec(version, 1))['features.0.weight']
    raise UserError(
        f'features.0.weight has shape {tuple(state_dict["features.0.weight"].shape)} but '
        f'squeezenet{version} expects {expected}: this is a squeezenet{found} state_dict, '
        f'use --version={found}')
  if 'classifier.1.weight' not in state_dict:
    raise UserError(f'state_dict for squeezenet{version} is missing key '
                    'classifier.1.weight (the final 1x1 conv)')
  spec = torchvision_spec(version, int(state_dict['classifier.1.weight'].shape[0]))
  return spec, from_torch_state_dict(spec, state_dict, f'squeezenet{version}')


def to_torchvision(spec: spec_lib.SqueezeNetSpec, params: Mapping) -> dict[str, np.ndarray]:
  """A torchvision state_dict (numpy float32 arrays) from squeezejax parameters."""
  return to_torch_state_dict(spec, params, f'squeezenet{spec_version(spec)}')


def _check_keys_and_shapes(state_dict: Mapping[str, np.ndarray],
                           expected: Mapping[str, tuple[int, ...]], what: str) -> None:
  missing = [k for k in expected if k not in state_dict]
  unexpected = [k for k in state_dict if k not in expected]
  if missing:
    raise UserError(f'state_dict for {what} is missing {len(missing)} key(s): '
                    f'{_few(missing)}')
  if unexpected:
    raise UserError(f'state_dict for {what} has {len(unexpected)} unexpected key(s): '
                    f'{_few(unexpected)}')
  for key, shape in expected.items():
    if tuple(state_dict[key].shape) != shape:
      raise UserError(f'{key} has shape {tuple(state_dict[key].shape)} but {what} '
                      f'expects {shape}')


def _few(keys: list[str], n: int = 4) -> str:
  return ', '.join(keys[:n]) + (f', ... ({len(keys) - n} more)' if len(keys) > n else '')


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch.Tensor, without importing torch
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':  # exact in float32; numpy has no bfloat16
      value = value.float()
    return value.numpy()
  return np.asarray(value)


# -- files -----------------------------------------------------------------------------


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state_dict of numpy arrays from .pth/.pt (PyTorch), .safetensors or .npz."""
  if not os.path.isfile(path):
    raise UserError(f'{path!r}: no such file')
  ext = os.path.splitext(path)[1].lower()
  if ext not in FILE_KINDS:
    raise UserError(f'{path!r}: unknown weight file type {ext!r}: expected one of '
                    f'{", ".join(FILE_KINDS)}')
  try:
    if ext == '.safetensors':
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      return dict(load_file(path))
    if ext == '.npz':
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    return _load_torch(path)
  except UserError:
    raise
  except ImportError as e:
    raise UserError(f'{path!r}: reading {ext} files needs {e.name}; install '
                    '"squeezejax[torch]"') from None
  except Exception as e:  # pylint: disable=broad-except
    # Truncated or foreign files raise many different types; all are user input.
    raise UserError(f'{path!r} is not a readable {ext} weight file '
                    f'({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""})'
                    ) from None


def _load_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f'{path!r}: reading .pth/.pt files needs PyTorch; install '
                    '"squeezejax[torch]", or save the state_dict as .safetensors '
                    'or .npz') from None
  # weights_only: never execute pickled code from a downloaded file.
  obj = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']  # a training checkpoint wrapping the weights
  if not isinstance(obj, Mapping):
    raise UserError(f'{path!r} holds a {type(obj).__name__}, not a state_dict: '
                    'save model.state_dict() instead of the model')
  # nn.DataParallel prefixes every key with 'module.'.
  if obj and all(k.startswith('module.') for k in obj):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  return {k: _to_numpy(v) for k, v in obj.items()}


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes .safetensors or .npz (no PyTorch needed), or .pth/.pt (PyTorch)."""
  ext = os.path.splitext(path)[1].lower()
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if ext == '.safetensors':
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(arrays, path)
  elif ext == '.npz':
    np.savez(path, **arrays)
  elif ext in ('.pth', '.pt'):
    import torch  # pylint: disable=g-import-not-at-top
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
  else:
    raise UserError(f'{path!r}: unknown weight file type {ext!r}: expected one of '
                    f'{", ".join(FILE_KINDS)}')


# -- models ----------------------------------------------------------------------------


def torchvision_model(state_dict_or_path, version: str | None = None):
  """squeezejax SqueezeNet (NHWC float32 images -> logits) with torchvision's weights.

  Called without a dropout key the model evaluates (no dropout), like
  torchvision's `model.eval()`.
  """
  state_dict = (load_state_dict(state_dict_or_path)
                if isinstance(state_dict_or_path, (str, os.PathLike)) else state_dict_or_path)
  from squeezejax import model  # pylint: disable=g-import-not-at-top (JAX only here)
  return model.from_params(*from_torchvision(state_dict, version))


def new_head(spec: spec_lib.SqueezeNetSpec, params: dict, num_classes: int, seed: int = 0
             ) -> tuple[spec_lib.SqueezeNetSpec, dict]:
  """Replaces conv10 with a fresh one for `num_classes` (N(0, 0.01), zero bias)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(spec, num_classes=num_classes)
  c = spec.fires()[-1].out_channels
  rng = np.random.default_rng(seed)
  params = dict(params)
  params['conv10'] = {
      'kernel': (0.01 * rng.standard_normal((1, 1, c, num_classes))).astype(np.float32),
      'bias': np.zeros((num_classes,), np.float32)}
  return spec, params


# -- CLI -------------------------------------------------------------------------------


def read_class_names(path: str) -> list[str]:
  """One class name per line (blank lines ignored)."""
  if not os.path.isfile(path):
    raise UserError(f'--class_names={path!r}: no such file')
  with open(path, encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(
      prog='squeezejax convert',
      description='torchvision SqueezeNet or AlexNet weights -> a squeezejax model directory '
                  '(usable by train --config.init_from, eval, predict, export, finetune).')
  parser.add_argument('--from', dest='source', required=True,
                      help=f'torchvision state_dict: {", ".join(FILE_KINDS)}; or the authors\' '
                           'Deep Compression SqueezeNet, compressed_SqueezeNet.net')
  parser.add_argument('--version', default=None,
                      help='1_0 or 1_1 (default: from the shape of conv1)')
  parser.add_argument('--out', required=True, help='model directory to write')
  parser.add_argument('--num_classes', type=int, default=None,
                      help='if it differs from the file\'s, conv10 is replaced by a '
                           'fresh N(0, 0.01) head to be fine-tuned')
  parser.add_argument('--class_names', default=None,
                      help='text file, one class name per line (default: class_<i>)')
  args = parser.parse_args(argv)
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top

  files.check_output_dir(args.out, '--out')
  if os.path.exists(os.path.join(args.out, checkpoint.MODEL_JSON)):
    raise UserError(f'--out={args.out!r} already holds a model: expected a new or '
                    'empty directory')
  if args.source.lower().endswith(DEEP_COMPRESSION_KIND):
    return convert_deep_compression(args)
  state_dict = load_state_dict(args.source)
  from squeezejax import convert_alexnet  # pylint: disable=g-import-not-at-top
  if convert_alexnet.is_alexnet(state_dict):
    if args.version is not None:
      raise UserError(f'--version={args.version!r}: {args.source!r} is a torchvision AlexNet, '
                      'which has no versions; expected no --version')
    spec, params = convert_alexnet.from_torchvision(state_dict)
    version = ''
    name = 'alexnet'
  else:
    spec, params = from_torchvision(state_dict, args.version)
    version = spec_version(spec)
    name = f'squeezenet{version}'
  print(f'read {args.source}: torchvision {name}, {spec.num_classes} classes, '
        f'{sum(v.size for v in state_dict.values()):,} parameters')
  head = 'imported'
  if args.num_classes is not None and args.num_classes != spec.num_classes and version == '':
    raise UserError(f'--num_classes={args.num_classes}: a new head is for SqueezeNet only; '
                    'fine-tune an AlexNet with train --config.init_from instead')
  if args.num_classes is not None and args.num_classes != spec.num_classes:
    if args.num_classes < 1:
      raise UserError(f'--num_classes={args.num_classes}: expected an integer >= 1')
    spec, params = new_head(spec, params, args.num_classes)
    head = 'new'
    print(f'conv10 replaced by a new {args.num_classes}-class head (fine-tune it before use)')
  class_names = read_class_names(args.class_names) if args.class_names else None
  if class_names is not None and len(class_names) != spec.num_classes:
    raise UserError(f'--class_names={args.class_names!r} has {len(class_names)} names '
                    f'but the model has {spec.num_classes} classes')
  meta = {
      'source': f'torchvision {name}: {os.path.abspath(args.source)}',
      'head': head,
      'preprocessing': dict(PREPROCESSING),
      'class_names': class_names,
  }
  checkpoint.save_model(args.out, spec, params, meta)
  print(f'wrote {args.out}')
  return 0


def convert_deep_compression(args) -> int:
  """--from=compressed_SqueezeNet.net: the authors' Deep Compression file (Caffe
  SqueezeNet v1.0 trained on ImageNet) -> a compressed model directory.

  The file is decoded against the Caffe v1.0 spec (conv10 padded by 1), checked to
  re-encode to the same bytes, and stored as it is; model.json records Caffe's
  preprocessing and the 1000 ImageNet classes.
  """
  from squeezejax.compression import accounting, weights  # pylint: disable=g-import-not-at-top
  from squeezejax.compression import format as format_lib  # pylint: disable=g-import-not-at-top
  if args.num_classes not in (None, 1000) or args.version not in (None, '1_0', '1.0', 'v1.0'):
    raise UserError(f'--from={args.source!r} is the 1000-class SqueezeNet v1.0 as it is: expected '
                    'no --num_classes or --version (finetune --init=OUT gives a new head)')
  spec = weights.authors_spec()
  encoded = weights.read_file(args.source, spec, **{k: v for k, v in weights.AUTHORS_BITS.items()})
  with open(args.source, 'rb') as f:
    if format_lib.write(encoded) != f.read():  # the file's layout, exactly
      raise UserError(f'{args.source!r} decodes but does not re-encode to the same bytes: '
                      'not the canonical Deep Compression layout')
  synsets, names = imagenet_classes()
  if args.class_names:
    names = read_class_names(args.class_names)
    if len(names) != spec.num_classes:
      raise UserError(f'--class_names={args.class_names!r} has {len(names)} names but the '
                      f'model has {spec.num_classes} classes')
  rows = accounting.layer_sizes(encoded, 8, 4)
  total = accounting.summary(rows)
  print(f'read {args.source}: Deep Compression SqueezeNet v1.0, {total["nonzero"]:,} of '
        f'{total["weights"]:,} weights kept ({100 * total["density"]:.1f}%), '
        f'{total["bytes"]:,} bytes (paper label {total["label_mb"]:g}MB)')
  meta = {'source': f'Deep Compression SqueezeNet v1.0: {os.path.abspath(args.source)}',
          'head': 'imported', 'preprocessing': dict(weights.CAFFE_PREPROCESSING),
          'class_names': names, 'synsets': synsets}
  weights.save(args.out, spec, encoded, meta, **weights.AUTHORS_BITS)
  print(f'wrote {args.out}')
  return 0


def imagenet_classes() -> tuple[list[str], list[str]]:
  """(WordNet ids, names) of the 1000 ImageNet classes, in Caffe's order."""
  from importlib import resources  # pylint: disable=g-import-not-at-top
  text = resources.files('squeezejax.resources').joinpath('imagenet_classes.tsv').read_text()
  pairs = [line.split('\t', 1) for line in text.splitlines() if line]
  return [s for s, _ in pairs], [n for _, n in pairs]
