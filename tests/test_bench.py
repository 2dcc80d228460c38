"""The benchmark harness on a tiny config: it runs, writes its JSON schema, gives positive
numbers, and each PyTorch configuration trains the same network as the JAX one. No timing
assertions."""

import json

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from squeezejax import bench, cli, parallel, step_profile, torch_reference
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

# No dropout, so that every side's losses are the same numbers (each draws its own masks).
TINY = ['--model=squeezenet_small', '--image_size=16', '--batch_size=8', '--spec.base_e=16',
        '--spec.incr_e=16', '--spec.dropout_rate=0', '--windows=2', '--steps=1',
        '--peak_size=64']


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  """All three PyTorch configurations: the suite's one torch.compile (cached on disk by
  Inductor after the first run)."""
  path = tmp_path_factory.mktemp('bench') / 'bench.json'
  assert bench.main([*TINY, '--compare=torch', '--cpu_convolutions=auto,eigen,ynnpack',
                     '--profile=1', f'--json={path}']) == 0
  return json.loads(path.read_text())


def test_json_schema_and_positive_numbers(report):
  # The three --cpu_convolutions, timed side by side; 'auto' as what it picked.
  result, eigen, ynnpack = report['results']
  assert [r['cpu_convolutions'] for r in report['results']] == ['onednn', 'eigen', 'ynnpack']
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
  cpu = report['cpu']
  assert isinstance(cpu['model_name'], str) and cpu['model_name']
  if cpu['flags'] is not None:  # x86 Linux
    assert set(cpu['flags']) == set(parallel.CPU_FLAGS)
    assert all(isinstance(v, bool) for v in cpu['flags'].values())


def test_every_torch_configuration_is_timed_and_the_best_is_the_headline(report):
  for result in report['results']:
    configs = result['torch']
    assert list(configs) == list(bench.TORCH_CONFIGS)
    for name, entry in configs.items():
      assert entry['error'] is None, (name, entry['error'])
      assert entry['img_s'] > 0 and entry['ratio'] > 0 and len(entry['img_s_windows']) == 2
    best = max(configs, key=lambda name: configs[name]['img_s'])
    assert result['torch_best'] == best
    assert result['torch_img_s'] == configs[best]['img_s']
    assert result['ratio'] == configs[best]['ratio']
    assert result['torch_img_s_windows'] == configs[best]['img_s_windows']
  text = bench.table(report['results'], report['cpu'], report['peak_matmul_gflops'])
  assert report['cpu']['model_name'] in text
  assert f'{report["peak_matmul_gflops"]:.1f} GFLOP/s' in text
  assert '| best torch |' in text and f'| {report["results"][0]["torch_best"]} |' in text
  for name in bench.TORCH_CONFIGS:
    assert f'| {name} |' in text


def test_every_configuration_trains_the_same_network(report):
  """The two warm-up steps' losses: the first is the forward pass on the same weights,
  the second follows one SGD step, so its change checks gradients and update too."""
  result = report['results'][0]
  eager = np.array(result['torch']['eager']['losses'])
  assert len(eager) == 2 and eager[0] != eager[1]
  sides = {name: entry['losses'] for name, entry in result['torch'].items()}
  sides['squeezejax'] = result['squeezejax_losses']
  for name, losses in sides.items():
    losses = np.array(losses)
    np.testing.assert_allclose(losses, eager, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(losses[1] - losses[0], eager[1] - eager[0],
                               rtol=0.05, atol=2e-6, err_msg=name)


def test_bfloat16_is_compared_with_pytorch_autocast_on_the_same_network(report, tmp_path):
  """--dtype=bfloat16: both sides compute in bfloat16 with float32 parameters (PyTorch
  under torch.autocast), so their losses agree to bfloat16's precision and are not the
  float32 run's (the same weights and images)."""
  path = tmp_path / 'bench.json'
  assert bench.main([*TINY, '--windows=1', '--compare=torch', '--dtype=bfloat16',
                     '--torch_configs=eager,channels_last', f'--json={path}']) == 0
  result, = json.loads(path.read_text())['results']
  assert result['dtype'] == 'bfloat16' and result['ratio'] > 0
  ours = np.array(result['squeezejax_losses'])
  float32 = np.array(report['results'][0]['squeezejax_losses'])
  assert not np.array_equal(ours, float32)
  for name, entry in result['torch'].items():
    theirs = np.array(entry['losses'])
    assert not np.array_equal(theirs, float32), name
    np.testing.assert_allclose(ours, theirs, rtol=3e-2, err_msg=name)


def test_profile_attributes_the_step_to_libraries_and_phases(report):
  onednn, eigen, ynnpack = report['results']
  for result in (onednn, eigen, ynnpack):
    profile = result['profile']
    assert profile['torch_config'] == result['torch_best']
    jax_ms = profile['jax']['ms_per_step']
    assert all(v >= 0 for v in jax_ms.values()) and sum(jax_ms.values()) > 0
    phases = {key.split(' | ')[1] for key in jax_ms}
    assert {'forward', 'backward'} <= phases, phases
    assert all(0 < b <= 1 for b in profile['jax']['busy_share'])
    assert profile['torch']['ms_per_step']['convolution'] > 0
    assert step_profile.table(result).startswith(
        f'### squeezenet_small 16 px, batch 8, {result["cpu_convolutions"]}; PyTorch ')
  # Which library runs the convolutions is what --cpu_convolutions chose: oneDNN all
  # of them; with XLA's own, the fire modules' 1x1s run as YNNPACK matmuls.
  onednn_ms = onednn['profile']['jax']['ms_per_step']
  assert onednn_ms['convolution (oneDNN) | forward'] > 0
  assert onednn_ms['convolution (oneDNN) | backward'] > 0
  assert not any(k.startswith(('dot', 'convolution (library', 'convolution |')) for k in onednn_ms)
  for result in (eigen, ynnpack):
    assert result['profile']['jax']['ms_per_step']['dot (library fusion) | forward'] > 0
    assert result['profile']['jax']['ms_per_step']['dot (library fusion) | backward'] > 0
  assert any(k.startswith('convolution (library fusion)') for k in ynnpack['profile']['jax'][
      'ms_per_step'])
  assert not any(k.startswith('convolution (library fusion)') for k in eigen['profile']['jax'][
      'ms_per_step'])
  assert any(k.startswith('convolution |') for k in eigen['profile']['jax']['ms_per_step'])


def test_busy_time_is_the_union_of_intervals():
  assert step_profile._busy([]) == 0
  assert step_profile._busy([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17


def test_a_failed_torch_compile_is_recorded_not_fatal(monkeypatch, tmp_path):
  def fail(*args, **kwargs):
    raise RuntimeError('no C++ compiler\nsecond line')
  monkeypatch.setattr(torch, 'compile', fail)
  path = tmp_path / 'bench.json'
  assert bench.main([*TINY, '--windows=1', '--compare=torch',
                     '--torch_configs=eager,compile', f'--json={path}']) == 0
  result, = json.loads(path.read_text())['results']
  assert list(result['torch']) == ['eager', 'compile']
  failed = result['torch']['compile']
  assert failed['error'] == 'RuntimeError: no C++ compiler\nsecond line'
  assert failed['img_s'] is None and failed['ratio'] is None
  assert result['torch_best'] == 'eager' and result['ratio'] > 0
  assert '| compile |  |  | failed: RuntimeError: no C++ compiler |' in bench.table([result])


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
def test_torch_module_is_the_same_network(model, flags):
  """bench's PyTorch model, NCHW and channels_last: the torch twin of the case's spec
  holding the JAX initial weights (torchvision's module tree and key names)."""
  case, = bench.parse_cases(model, 33, 8, flags)
  graphdef, params = random_params(case.spec)
  images = np.random.default_rng(0).standard_normal((8, 33, 33, 3), np.float32)
  labels = np.zeros(8, np.int32)
  jax_logits = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, images)
  for config in ('eager', 'channels_last'):
    torch_case = torch_reference.TrainStep(case.spec, params, images, labels, config,
                                            warmup_steps=0)
    module = torch_case.module.eval()
    assert isinstance(module, torch_reference.SqueezeNet)
    np.testing.assert_array_equal(module.features[0].weight.detach().numpy(),
                                  np.transpose(params['conv1']['kernel'], (3, 2, 0, 1)))
    if config == 'channels_last':
      assert torch_case.images.is_contiguous(memory_format=torch.channels_last)
      assert module.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
      torch_logits = module(torch_case.images).numpy()
    np.testing.assert_allclose(torch_logits, jax_logits, rtol=1e-4,
                               atol=1e-4 * np.abs(torch_logits).max(), err_msg=config)


@pytest.mark.parametrize('argv,message', [
    (['--model=squeezenet9'], 'model='),
    (['--model=squeezenet_small', '--image_size=4'], 'image_size=4'),
    (['--image_size=64'], 'need --model'),
    (['--model=squeezenet_small', '--spec.sqeeze_ratio=0.5'], r'^--spec\.sqeeze_ratio'),
    (['--model=squeezenet_small', '--spec.base_e=many'], r'^--spec\.base_e='),
    (['--model=squeezenet_small', '--spec.in_channels=0'], 'in_channels=0'),
    (['--model=squeezenet_small', '--batch_size=12'], 'batch_size=12'),  # 8 devices
    (['--compare=tensorflow'], 'compare'),
    (['--compare=torch', '--torch_configs=eager,jit'], "torch_configs='eager,jit'"),
    (['--cpu_convolutions=eigen,mkl'], "cpu_convolutions='mkl'"),
    (['--model=squeezenet_small', '--batch_splits=3'], 'batch_splits=3'),
    (['--model=squeezenet_small', '--profile=-2'], 'profile=-2'),
])
def test_user_errors_are_one_line(argv, message):
  with pytest.raises(UserError, match=message) as info:
    bench.main(argv)
  assert '\n' not in str(info.value)


def test_cli_dispatches_bench(capsys):
  assert cli.main(['bench', '--model=squeezenet9']) == 2
  assert 'squeezejax bench: error' in capsys.readouterr().err
