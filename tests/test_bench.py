"""The benchmark harness on a tiny config: it runs, writes its JSON schema, gives positive
numbers, and its PyTorch model is the same network as the JAX one. No timing assertions."""

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from squeezejax import bench, cli, torch_reference
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

TINY = ['--model=squeezenet_small', '--image_size=16', '--batch_size=8', '--spec.base_e=16',
        '--spec.incr_e=16', '--windows=2', '--steps=1', '--peak_size=64']


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  path = tmp_path_factory.mktemp('bench') / 'bench.json'
  assert bench.main([*TINY, '--compare=torch', '--cpu_convolutions=eigen,ynnpack',
                     f'--json={path}']) == 0
  return json.loads(path.read_text())


def test_json_schema_and_positive_numbers(report):
  result, ynnpack = report['results']  # the two --cpu_convolutions, timed side by side
  assert (result['cpu_convolutions'], ynnpack['cpu_convolutions']) == ('eigen', 'ynnpack')
  assert result['batch_splits'] == 1  # automatic: 4 needs 4 images per device, here 1
  assert result['torch_img_s_windows'] == ynnpack['torch_img_s_windows']
  assert result['model'] == 'squeezenet_small'
  assert (result['image_size'], result['batch_size'], result['dtype']) == (16, 8, 'float32')
  assert result['devices'] == jax.device_count()  # every (fake) device of the test process
  assert result['spec']['base_e'] == 16
  for key in ('squeezejax_img_s', 'torch_img_s', 'ratio', 'eval_img_s', 'input_img_s',
              'compile_train_s', 'compile_eval_s', 'train_gflops', 'peak_matmul_gflops', 'mfu'):
    assert isinstance(result[key], float) and result[key] > 0, key
  assert len(result['train_img_s_windows']) == 2 and len(result['torch_img_s_windows']) == 2
  assert report['peak_matmul_gflops'] == result['peak_matmul_gflops']
  assert report['environment']['torch'] == torch.__version__


def test_cases_are_the_trainers_config_and_spec():
  case, = bench.parse_cases('squeezenet_small', 0, 0, {
      'base_e': '16', 'bypass': 'complex', 'conv10_relu': 'False', 'in_channels': '1',
      'num_classes': '7'}, batch_splits=2)
  assert case.spec == spec_lib.preset('squeezenet_small', base_e=16, bypass='complex',
                                      conv10_relu=False, in_channels=1, num_classes=7)
  assert (case.image_size, case.batch_size) == (32, 128)  # the layout's defaults
  config = case.config
  assert (config.model, config.batch_size, config.batch_splits) == ('squeezenet_small', 128, 2)
  assert (config.optimizer, config.lr, config.schedule) == ('sgd', bench.LEARNING_RATE,
                                                            'constant')


def random_params(spec):
  """(graphdef, pure-dict params) without running the initialisers op by op."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32),
                        nnx.to_pure_dict(abstract))
  return graphdef, params


@pytest.mark.parametrize('model,flags', [
    ('squeezenet_small', {'base_e': '16', 'incr_e': '16', 'bypass': 'complex',
                          'conv10_relu': 'False'}),
    ('squeezenet1_1', {'num_classes': '10'}),
])
def test_torch_module_is_the_same_network(model, flags, monkeypatch):
  """bench's PyTorch model: the torch twin of the case's spec holding the JAX initial
  weights (torchvision's module tree and key names)."""
  case, = bench.parse_cases(model, 33, 8, flags)
  graphdef, params = random_params(case.spec)
  images = np.random.default_rng(0).standard_normal((8, 33, 33, 3), np.float32)
  labels = np.zeros(8, np.int32)
  monkeypatch.setattr(bench.TorchCase, 'train', lambda self, steps: None)  # keep the weights
  module = bench.TorchCase(case, params, images, labels).module.eval()
  assert isinstance(module, torch_reference.SqueezeNet)
  np.testing.assert_array_equal(module.features[0].weight.detach().numpy(),
                                np.transpose(params['conv1']['kernel'], (3, 2, 0, 1)))
  with torch.no_grad():
    torch_logits = module(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  jax_logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, images)
  np.testing.assert_allclose(torch_logits, jax_logits, rtol=1e-4,
                             atol=1e-4 * np.abs(torch_logits).max())


@pytest.mark.parametrize('argv,message', [
    (['--model=squeezenet9'], 'model='),
    (['--model=squeezenet_small', '--image_size=4'], 'image_size=4'),
    (['--image_size=64'], 'need --model'),
    (['--model=squeezenet_small', '--compare=torch', '--dtype=bfloat16'], 'float32'),
    (['--model=squeezenet_small', '--spec.sqeeze_ratio=0.5'], r'^--spec\.sqeeze_ratio'),
    (['--model=squeezenet_small', '--spec.base_e=many'], r'^--spec\.base_e='),
    (['--model=squeezenet_small', '--spec.in_channels=0'], 'in_channels=0'),
    (['--model=squeezenet_small', '--batch_size=12'], 'batch_size=12'),  # 8 devices
    (['--compare=tensorflow'], 'compare'),
    (['--cpu_convolutions=eigen,mkl'], "cpu_convolutions='mkl'"),
    (['--model=squeezenet_small', '--batch_splits=3'], 'batch_splits=3'),
])
def test_user_errors_are_one_line(argv, message):
  with pytest.raises(UserError, match=message) as info:
    bench.main(argv)
  assert '\n' not in str(info.value)


def test_cli_dispatches_bench(capsys):
  assert cli.main(['bench', '--model=squeezenet9']) == 2
  assert 'squeezejax bench: error' in capsys.readouterr().err
