"""torchvision <-> squeezejax weights: logits parity with real PyTorch modules (torchvision's
and the torch twin of any spec), key maps, errors."""


import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')  # the CPU build is a test extra

from squeezejax import convert  # noqa: E402
from squeezejax import model as model_lib  # noqa: E402
from squeezejax import spec as spec_lib  # noqa: E402
from squeezejax import torch_reference  # noqa: E402
from squeezejax.errors import UserError  # noqa: E402

NUM_CLASSES = {'1_0': 1000, '1_1': 7}  # any number of classes converts


def randomized(version: str, seed: int = 0) -> torch.nn.Module:
  """torchvision's layout with random weights and non-zero biases (eval mode).

  The stock init (zero biases, N(0, 0.01) conv10) would leave most logits at
  the ReLU's zero and hide a misplaced bias; here most logits are positive.
  """
  torch.manual_seed(seed)
  module = torch_reference.squeezenet(version, NUM_CLASSES[version])
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith('weight'):
        fan_in = p[0].numel()
        p.copy_(torch.randn_like(p) * (2.0 / fan_in) ** 0.5)
      else:
        p.uniform_(-0.2, 0.2)
    module.classifier[1].bias.add_(0.5)
  return module.eval()


@pytest.fixture(scope='module', params=['1_0', '1_1'])
def pair(request):
  version = request.param
  reference = randomized(version)
  return version, reference, convert.torchvision_model(reference.state_dict(), version)


def torch_logits(module, images_nhwc: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return module(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


@pytest.mark.parametrize('size,batch', [(224, 1), (113, 2)])
def test_logits_match_pytorch(pair, size, batch):
  version, reference, model = pair
  images = np.random.default_rng(size).random((batch, size, size, 3), np.float32)
  expected = torch_logits(reference, images)
  got = np.asarray(model(images))  # no dropout key: evaluation, like module.eval()
  assert got.shape == (batch, NUM_CLASSES[version])
  assert (expected > 0).mean() > 0.5  # the comparison is not between zeros
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_round_trip_is_exact(pair):
  version, reference, _ = pair
  state_dict = reference.state_dict()
  spec, params = convert.from_torchvision(state_dict, version)
  assert spec.num_classes == NUM_CLASSES[version]
  assert spec.layout == {'1_0': 'v1.0', '1_1': 'v1.1'}[version]
  assert convert.infer_version(state_dict) == version
  back = convert.to_torchvision(spec, params)
  assert list(back) == list(state_dict)  # same keys, same order
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)


def random_params(spec, seed: int = 3) -> dict:
  """He-scaled random weights and biases; conv10's biases keep most logits above its ReLU."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda s: (rng.standard_normal(s.shape) * (2 / np.prod(s.shape[:-1])) ** 0.5
                 ).astype(np.float32), model_lib.abstract_params(spec))
  params['conv10']['bias'] = params['conv10']['bias'] + 0.5
  return params


def test_squeezejax_weights_run_in_pytorch():
  """The inverse direction: a squeezejax model's weights in torchvision's module."""
  spec = convert.torchvision_spec('1_1', 5)
  params = random_params(spec)
  model = model_lib.from_params(spec, params)
  module = torch_reference.squeezenet('1_1', 5).eval()
  module.load_state_dict({k: torch.from_numpy(v) for k, v in
                          convert.to_torchvision(spec, params).items()}, strict=True)
  images = np.random.default_rng(0).random((2, 113, 113, 3), np.float32)
  expected = torch_logits(module, images)
  np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize('version,fires', [('1_0', (3, 4, 5, 7, 8, 9, 10, 12)),
                                           ('1_1', (3, 4, 6, 7, 9, 10, 11, 12))])
def test_twin_of_torchvision_presets_has_torchvision_keys(version, fires):
  """The spec-built twin of the presets is torchvision's module: keys, order, shapes, and
  the key map convert.py derives from the spec (fire i at 3 + i + the pools before it)."""
  spec = spec_lib.preset(f'squeezenet{version}')
  twin = torch_reference.SqueezeNet(spec)
  shapes = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
  assert list(shapes.items()) == list(convert.torch_shapes(spec).items())
  assert sorted({int(k.split('.')[1]) for k in shapes if k.count('.') == 3}) == list(fires)
  # torchvision's initialisation: zero biases, conv10 N(0, 0.01), kaiming_uniform elsewhere.
  weights = twin.state_dict()
  assert all(not v.any() for k, v in weights.items() if k.endswith('bias'))
  assert abs(float(weights['classifier.1.weight'].std()) - 0.01) < 1e-3
  squeeze = weights['features.3.squeeze.weight']
  assert float(squeeze.abs().max()) <= (6 / squeeze[0].numel()) ** 0.5


TWIN_SPECS = {  # every option torchvision lacks, at small sizes
    'small_complex_no_relu': (spec_lib.preset('squeezenet_small', bypass='complex',
                                              conv10_relu=False, base_e=32, incr_e=32), 20),
    'v1_1_pct1_gray': (spec_lib.preset('squeezenet1_1', pct_3x3=1.0, in_channels=1,
                                       num_classes=6), 41),
    'v1_0_simple_pct0': (spec_lib.preset('squeezenet1_0_simple', pct_3x3=0.0, num_classes=4,
                                         dropout_rate=0.2), 45),
}


@pytest.mark.parametrize('name', TWIN_SPECS)
def test_torch_twin_of_any_spec_matches_squeezejax(name):
  spec, size = TWIN_SPECS[name]
  params = random_params(spec)
  twin = torch_reference.from_params(spec, params).eval()  # strict load_state_dict
  state_dict = twin.state_dict()
  assert {k: tuple(v.shape) for k, v in state_dict.items()} == convert.torch_shapes(spec)
  assert any('bypass_conv' in k for k in state_dict) == (spec.bypass == 'complex')
  assert any('expand1x1' in k for k in state_dict) == (spec.pct_3x3 < 1)
  assert any('expand3x3' in k for k in state_dict) == (spec.pct_3x3 > 0)
  images = np.random.default_rng(1).random((2, size, size, spec.in_channels), np.float32)
  expected = torch_logits(twin, images)
  got = np.asarray(model_lib.from_params(spec, params)(images))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  back = convert.to_torch_state_dict(spec, convert.from_torch_state_dict(spec, state_dict))
  assert list(back) == list(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize('ext', ['.pth', '.safetensors', '.npz'])
def test_weight_files_round_trip(tmp_path, ext):
  state_dict = {k: v.numpy() for k, v in randomized('1_1').state_dict().items()}
  path = str(tmp_path / f'weights{ext}')
  convert.save_state_dict(state_dict, path)
  loaded = convert.load_state_dict(path)
  assert sorted(loaded) == sorted(state_dict)
  for key in state_dict:
    np.testing.assert_array_equal(loaded[key], state_dict[key])


def test_pth_wrapped_in_checkpoint_and_dataparallel(tmp_path):
  state_dict = randomized('1_1').state_dict()
  path = str(tmp_path / 'ckpt.pt')
  torch.save({'state_dict': {'module.' + k: v for k, v in state_dict.items()}, 'epoch': 3},
             path)
  spec, _ = convert.from_torchvision(convert.load_state_dict(path))
  assert spec.layout == 'v1.1'


# -- user errors: one line, naming the bad value -------------------------------------------


@pytest.fixture(scope='module')
def state_dict_1_1():
  return {k: v.numpy() for k, v in randomized('1_1').state_dict().items()}


def one_line_error(fn, *args, match: str):
  with pytest.raises(UserError, match=match) as info:
    fn(*args)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_wrong_version(state_dict_1_1):
  one_line_error(convert.from_torchvision, state_dict_1_1, '2_0',
                 match=r"version='2_0' is not allowed: expected 1_0 or 1_1")
  for alias in ('1.1', 'squeezenet1_1', 'v1.1'):
    assert convert.normalize_version(alias) == '1_1'
  # A 1_1 file read as 1_0: the first differing key with both shapes.
  message = one_line_error(convert.from_torchvision, state_dict_1_1, '1_0',
                           match=r'features\.0\.weight has shape')
  assert '(64, 3, 3, 3)' in message and '(96, 3, 7, 7)' in message
  assert 'use --version=1_1' in message


def test_missing_unexpected_and_misshapen_keys(state_dict_1_1):
  missing = dict(state_dict_1_1)
  del missing['features.6.expand3x3.bias']
  one_line_error(convert.from_torchvision, missing, '1_1',
                 match=r'missing 1 key\(s\): features\.6\.expand3x3\.bias')
  extra = dict(state_dict_1_1, **{'fc.weight': np.zeros(3, np.float32)})
  one_line_error(convert.from_torchvision, extra, '1_1',
                 match=r'1 unexpected key\(s\): fc\.weight')
  bad = dict(state_dict_1_1)
  bad['features.9.squeeze.weight'] = np.zeros((48, 255, 1, 1), np.float32)
  one_line_error(convert.from_torchvision, bad, '1_1',
                 match=r'features\.9\.squeeze\.weight has shape \(48, 255, 1, 1\) but '
                       r'squeezenet1_1 expects \(48, 256, 1, 1\)')
  one_line_error(convert.from_torchvision, {'fc.weight': np.zeros(3)},
                 match=r'no key features\.0\.weight')


def test_unreadable_files(tmp_path):
  one_line_error(convert.load_state_dict, str(tmp_path / 'nope.pth'), match='no such file')
  for name in ('junk.pth', 'junk.safetensors', 'junk.npz'):
    path = tmp_path / name
    path.write_bytes(b'not weights at all')
    one_line_error(convert.load_state_dict, str(path), match='is not a readable')
  other = tmp_path / 'weights.h5'
  other.write_bytes(b'x')
  one_line_error(convert.load_state_dict, str(other), match=r"unknown weight file type '\.h5'")
  model_file = tmp_path / 'model.pth'
  torch.save(torch.nn.Linear(2, 2), str(model_file))  # a pickled module, not a state_dict
  one_line_error(convert.load_state_dict, str(model_file), match='is not a readable')


def test_spec_without_torchvision_counterpart():
  for spec, match in [
      (spec_lib.preset('squeezenet_small'), "layout='small' has no torchvision"),
      (spec_lib.preset('squeezenet1_1', squeeze_ratio=0.25), 'not torchvision'),
      (spec_lib.preset('squeezenet1_0', conv10_relu=False), 'conv10_relu=False'),
  ]:
    one_line_error(convert.spec_version, spec, match=match)
    one_line_error(convert.to_torchvision, spec, random_params(spec), match=match)


def test_state_dict_of_another_spec():
  spec, _ = TWIN_SPECS['small_complex_no_relu']
  state_dict = convert.to_torch_state_dict(spec, random_params(spec))
  assert [k for k in state_dict if 'bypass_conv.weight' in k] == [
      f'features.{k}.bypass_conv.weight' for k in (3, 6, 9, 11)]  # fire2, 4, 6, 8
  del state_dict['features.6.bypass_conv.bias']
  one_line_error(convert.from_torch_state_dict, spec, state_dict,
                 match=r'state_dict for this spec is missing 1 key\(s\): '
                       r'features\.6\.bypass_conv\.bias')


def test_cli_writes_a_model_directory(tmp_path, capsys):
  from squeezejax import checkpoint, cli
  state_dict = randomized('1_1').state_dict()
  torch.save(state_dict, str(tmp_path / 'sq.pth'))
  (tmp_path / 'names.txt').write_text('\n'.join(f'n{i}' for i in range(7)))
  out = str(tmp_path / 'model')
  argv = ['convert', f'--from={tmp_path / "sq.pth"}', '--version=1.1', f'--out={out}',
          f'--class_names={tmp_path / "names.txt"}']
  assert cli.main(argv) == 0
  assert 'torchvision squeezenet1_1, 7 classes' in capsys.readouterr().out
  spec, params, meta = checkpoint.load_model(out)
  assert spec == convert.torchvision_spec('1_1', 7)
  assert meta['preprocessing'] == convert.PREPROCESSING
  assert meta['class_names'] == [f'n{i}' for i in range(7)]
  back = convert.to_torchvision(spec, jax.tree.map(np.asarray, params))
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
  # Writing over a model is refused; a new head for another class count is fresh.
  assert cli.main(argv) == 2
  assert 'already holds a model' in capsys.readouterr().err
  out2 = str(tmp_path / 'model2')
  assert cli.main(['convert', f'--from={tmp_path / "sq.pth"}', f'--out={out2}',
                   '--num_classes=2']) == 0
  spec2, params2, meta2 = checkpoint.load_model(out2)
  assert spec2.num_classes == 2 and meta2['head'] == 'new'
  assert params2['conv10']['kernel'].shape == (1, 1, 512, 2)
  np.testing.assert_array_equal(params2['fires'][7]['squeeze']['kernel'],
                                params['fires'][7]['squeeze']['kernel'])
  assert cli.main(['convert', f'--from={tmp_path / "missing.pth"}', f'--out={out2}x']) == 2
  assert 'no such file' in capsys.readouterr().err
