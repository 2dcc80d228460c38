"""`squeezejax finetune`: one real run (frozen backbone) on a generated image folder."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from squeezejax import checkpoint
from squeezejax import cli
from squeezejax import finetune
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib

CLASSES = {'blue': (40, 40, 200), 'green': (40, 200, 40), 'red': (200, 40, 40)}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """ROOT/CLASS/*.png, 10 noisy colour squares per class (2 per class held out)."""
  root = tmp_path_factory.mktemp('colours')
  rng = np.random.default_rng(0)
  for name, colour in CLASSES.items():
    os.makedirs(root / name)
    for i in range(10):
      pixels = np.clip(np.array(colour) + rng.normal(0, 40, (40, 36, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(root / name / f'{i:02d}.png')
  return str(root)


@pytest.fixture(scope='module')
def init_dir(tmp_path_factory):
  """A 5-class model directory, as `squeezejax convert` writes (torchvision preprocessing)."""
  spec = spec_lib.preset('squeezenet1_1', base_e=16, incr_e=16, num_classes=5,
                         init='torchvision')
  rng = np.random.default_rng(1)  # random weights without an (eager, slow) NNX init
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(np.float32), shapes)
  directory = str(tmp_path_factory.mktemp('init'))
  checkpoint.save_model(directory, spec, params, {'preprocessing': {
      'kind': 'torchvision', 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225],
      'resize': 36, 'image_size': 32}})
  return directory


def test_finetune_frozen_backbone(folder, init_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  argv = ['finetune', f'--init={init_dir}', f'--data={folder}', '--num_classes=3',
          '--freeze_backbone', '--steps=6', '--batch_size=8', f'--workdir={workdir}',
          '--config.num_devices=1', '--config.log_every=3']
  assert cli.main(argv) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(workdir, finetune.REPORT_JSON)) as f:
    result = json.load(f)
  counts = np.array(result['confusion_matrix'])
  assert counts.shape == (3, 3) and counts.sum() == result['examples'] == 6
  assert result['class_names'] == sorted(CLASSES)
  assert result['accuracy'] == pytest.approx(np.trace(counts) / 6)
  # Our evaluation and the trainer's agree on the same held-out images.
  assert result['accuracy'] == pytest.approx(result['train_result']['top1'])
  for i, name in enumerate(result['class_names']):
    assert result['per_class_accuracy'][name] == pytest.approx(counts[i, i] / counts[i].sum())
  assert f'test accuracy {result["accuracy"]:.4f} on 6 images' in printed
  assert os.path.getsize(os.path.join(workdir, finetune.CONFUSION_PNG)) > 1000

  # Frozen backbone: every layer but conv10 is exactly the init model's.
  _, before, _ = checkpoint.load_model(init_dir)
  spec, after, meta = checkpoint.load_model(workdir)
  assert spec.num_classes == 3 and not spec.conv10_relu  # a new head, without the ReLU
  assert meta['class_names'] == sorted(CLASSES)
  for name in before:
    if name != 'conv10':
      jax.tree.map(np.testing.assert_array_equal, before[name], after[name])
  assert after['conv10']['kernel'].shape == (1, 1, 64, 3)
  assert np.abs(np.asarray(after['conv10']['bias'])).max() > 0  # conv10 trained


def test_confusion_matrix_and_report():
  labels, predicted = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
  result = finetune.report(labels, predicted, ['a', 'b', 'c', 'd'])
  assert result['confusion_matrix'] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
  assert result['accuracy'] == pytest.approx(4 / 6)
  assert result['per_class_accuracy'] == {'a': 0.5, 'b': 1.0, 'c': pytest.approx(2 / 3),
                                          'd': None}
  text = finetune.format_report(result)
  assert 'test accuracy 0.6667 on 6 images' in text and 'd                -' in text


def test_user_errors(folder, init_dir, tmp_path, capsys):
  base = [f'--init={init_dir}', f'--data={folder}', f'--workdir={tmp_path / "w"}']
  assert cli.main(['finetune', *base, '--num_classes=4']) == 2
  assert ("--num_classes=4 but" in capsys.readouterr().err)
  assert cli.main(['finetune', *base, '--num_classes=3', '--steps=0']) == 2
  assert '--steps=0: expected an integer >= 1' in capsys.readouterr().err
  assert cli.main(['finetune', f'--init={tmp_path}', f'--data={folder}', '--num_classes=3',
                   f'--workdir={tmp_path / "w"}']) == 2
  assert 'is not a model directory' in capsys.readouterr().err
  assert cli.main(['finetune', f'--init={init_dir}', f'--data={tmp_path / "none"}',
                   '--num_classes=3', f'--workdir={tmp_path / "w"}']) == 2
  assert 'does not exist' in capsys.readouterr().err


def test_finetuning_keeps_the_loaded_spec_unless_a_field_is_set(folder, tmp_path):
  from squeezejax import configs
  spec = spec_lib.preset('squeezenet1_1', base_e=16, incr_e=16, num_classes=3,
                         dropout_rate=0.3, init='torchvision')
  shapes = model_lib.abstract_params(spec)
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  init = str(tmp_path / 'init')
  checkpoint.save_model(init, spec, params, {'preprocessing': {'image_size': 32}})
  config = finetune.finetune_config(init, folder)
  tuned = configs.spec_from_config(config, num_classes=3, in_channels=3, base=spec)
  assert tuned == spec  # same class count: dropout 0.3 and the conv10 ReLU are kept
  configs.apply_overrides(config, {'spec.dropout_rate': '0.1', 'spec.squeeze_ratio': '0.25'})
  tuned = configs.spec_from_config(config, num_classes=3, in_channels=3, base=spec)
  assert (tuned.dropout_rate, tuned.squeeze_ratio, tuned.base_e) == (0.1, 0.25, 16)


# -- linear probe (--probe) --------------------------------------------------------------


def test_linear_probe_frozen_features(folder, init_dir, tmp_path, capsys):
  def tree_bytes(directory):
    return {os.path.relpath(os.path.join(d, f), directory): open(os.path.join(d, f), 'rb').read()
            for d, _, names in os.walk(directory) for f in names}

  before = tree_bytes(init_dir)
  workdir = str(tmp_path / 'probe')
  assert cli.main(['finetune', f'--init={init_dir}', f'--data={folder}', '--probe=fire9,conv1',
                   '--steps=200', f'--workdir={workdir}']) == 0
  printed = capsys.readouterr().out
  assert tree_bytes(init_dir) == before  # the network is only read: features stay frozen
  with open(os.path.join(workdir, finetune.PROBE_JSON)) as f:
    result = json.load(f)
  assert list(result['layers']) == ['conv1', 'fire9']  # network order
  conv1 = result['layers']['conv1']
  assert (conv1['channels'], conv1['stride'], conv1['examples']) == (64, 4, 6)
  # Noisy colour squares are linearly separable in conv1's pooled (colour) features.
  assert conv1['accuracy'] >= 5 / 6 and conv1['train_accuracy'] == 1.0  # chance: 1/3
  assert set(conv1['per_class_accuracy']) == set(CLASSES)
  # Only the probes were trained: a kernel, bias and standardisation per layer.
  probes = np.load(os.path.join(workdir, finetune.PROBE_NPZ))
  assert {k: probes[k].shape for k in probes.files} == {
      'conv1/kernel': (64, 3), 'conv1/bias': (3,), 'conv1/mean': (64,), 'conv1/std': (64,),
      'fire9/kernel': (64, 3), 'fire9/bias': (3,), 'fire9/mean': (64,), 'fire9/std': (64,)}
  assert 'layer     channels  stride  train top-1  test top-1' in printed
  assert f'conv1           64       4       1.0000  {conv1["accuracy"]:>10.4f}' in printed


def test_train_probe_learns_a_separable_problem():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 1, (4, 20)) * 1e3  # an unstandardised scale, as pooled maps have
  labels = np.arange(400) % 4
  x = centres[labels] + rng.normal(0, 300, (400, 20))
  probe = finetune.train_probe(x[:300], labels[:300], 4, steps=200)
  assert np.mean(finetune.probe_predict(probe, x[300:]) == labels[300:]) > 0.95  # chance 0.25
  assert probe['loss'][-1] < probe['loss'][0] / 5


def test_probe_user_errors(folder, init_dir, tmp_path, capsys):
  workdir = tmp_path / 'w'
  base = ['finetune', f'--init={init_dir}', f'--data={folder}', f'--workdir={workdir}']
  assert cli.main([*base, '--probe=conv1,fire99']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and "unknown layer 'fire99'" in err
  assert 'conv1, fire2, fire3, fire4, fire5, fire6, fire7, fire8, fire9, conv10, or all' in err
  assert cli.main([*base, '--probe=fire9', '--config.lr=0.1']) == 2
  assert '--config.lr: --config.* fields are the trainer' in capsys.readouterr().err
  assert cli.main(base) == 2  # fine-tuning still needs --num_classes
  assert '--num_classes is required' in capsys.readouterr().err
  assert not workdir.exists()
