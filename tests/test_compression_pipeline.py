"""`squeezejax compress` on a tiny network (synthetic data): pruned weights stay
exactly 0 through retraining, trained weight sharing keeps its clusters, and the
written file decodes to the fine-tuned network, which eval and summary read."""

import json
import os

import jax
import numpy as np
import pytest

from flax import nnx

from squeezejax import checkpoint, cli, configs
from squeezejax import model as model_lib
from squeezejax.compression import compress as compress_lib

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'fashion_mnist.py')
TRAIN_FLAGS = ['--config.train.num_devices=1', '--config.train.batch_size=32',
               '--config.train.eval_batch_size=48', '--config.train.batch_splits=1',
               '--config.train.log_every=2']


def params_of(directory):
  return jax.tree.map(np.asarray, checkpoint.load_model(directory)[1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A model directory of the `test` preset's network with random weights (training it
  first would only add minutes: compression needs a network, not a good one)."""
  config = configs.load(f'{CONFIG}:test')
  spec = configs.spec_from_config(config, num_classes=10, in_channels=3)
  rng = np.random.default_rng(0)
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.2).astype(np.float32), shapes)
  directory = str(tmp_path_factory.mktemp('base'))
  checkpoint.save_model(directory, spec, params, {'dataset': 'synthetic'})
  return directory


@pytest.fixture(scope='module')
def compressed(trained, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('dc') / 'out')
  argv = ['compress', f'--checkpoint={trained}', f'--workdir={out}', '--config.code_bits=5',
          '--config.density=conv1=0.8,*=0.4', '--config.prune_iterations=1',
          '--config.retrain_steps=4', '--config.share_steps=4', '--config.share_lr=0.01',
          *TRAIN_FLAGS]
  assert cli.main(argv) == 0
  return out


def test_pruned_weights_stay_zero_through_retraining(compressed):
  stages = os.path.join(compressed, compress_lib.STAGES)
  before, after = params_of(os.path.join(stages, 'prune1_init')), params_of(
      os.path.join(stages, 'prune1'))
  density = {'conv1': 0.8, 'conv10': 0.4}
  for name, d in density.items():
    k0, k1 = before[name]['kernel'], after[name]['kernel']
    assert abs((k0 != 0).mean() - d) < 0.01
    np.testing.assert_array_equal(k1[k0 == 0], 0)  # exactly, through momentum
    assert np.abs(k1 - k0).max() > 0  # the survivors were retrained
  k0, k1 = before['fires'][0]['squeeze']['kernel'], after['fires'][0]['squeeze']['kernel']
  np.testing.assert_array_equal(k1[k0 == 0], 0)


def test_weight_sharing_keeps_clusters_and_trains_centroids(compressed):
  stages = os.path.join(compressed, compress_lib.STAGES)
  start, tuned = params_of(os.path.join(stages, 'share_init')), params_of(
      os.path.join(stages, 'share'))
  moved = 0.0
  for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(tuned)):
    if a.ndim != 4:
      continue
    assert len(np.unique(a)) <= 32
    values_a, ia = np.unique(a, return_inverse=True)
    values_b, ib = np.unique(b, return_inverse=True)
    # every cluster is still one value, and the clusters are the same weights
    assert len(values_a) == len(values_b)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(a == 0, b == 0)
    moved = max(moved, np.abs(values_b - values_a).max())
  assert moved > 0


def test_written_file_decodes_to_the_fine_tuned_network(compressed):
  stages = os.path.join(compressed, compress_lib.STAGES)
  for a, b in zip(jax.tree.leaves(params_of(os.path.join(stages, 'share'))),
                  jax.tree.leaves(params_of(compressed))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with open(os.path.join(compressed, compress_lib.REPORT_JSON)) as f:
    report = json.load(f)
  assert report['bytes'] == os.path.getsize(os.path.join(compressed, 'model.net'))
  assert report['reduction'] > 4


def test_eval_and_summary_read_the_compressed_directory(compressed, capsys):
  with open(os.path.join(compressed, compress_lib.REPORT_JSON)) as f:
    report = json.load(f)
  capsys.readouterr()
  assert cli.main(['eval', f'--config={CONFIG}:test', f'--workdir={compressed}',
                   '--config.num_devices=1']) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert metrics['top1'] == pytest.approx(report['eval']['top1'])
  assert cli.main(['summary', f'--checkpoint={compressed}']) == 0
  table = capsys.readouterr().out
  assert '| conv10 |' in table and f'{report["bytes"]:,} bytes' in table


@pytest.mark.parametrize('flag,word', [('--config.density=*=1.5', 'density'),
                                       ('--config.density=*=0', 'density'),
                                       ('--config.code_bits=9', 'code_bits'),
                                       ('--config.index_bits=0', 'index_bits')])
def test_bad_settings_exit_2_nothing_written(trained, tmp_path, capsys, flag, word):
  out = tmp_path / 'out'
  assert cli.main(['compress', f'--checkpoint={trained}', f'--workdir={out}', flag]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and word in err[0]
  assert not out.exists()


def test_evaluation_on_a_multi_device_mesh_matches_one_device(compressed):
  """The report's evaluation runs on the trainer's mesh: the decoded weights are placed
  on all of its devices, not on the first one only."""
  from squeezejax.compression import compress
  config = compress.compress_config().train
  config.update(dataset='synthetic', image_size=16, eval_batch_size=48, num_devices=2)
  with open(os.path.join(compressed, compress_lib.REPORT_JSON)) as f:
    one_device = json.load(f)['eval']
  assert compress.evaluate(compressed, config)['top1'] == pytest.approx(one_device['top1'])


def test_a_finished_compression_is_never_overwritten(compressed, trained, capsys):
  before = {name: os.path.getmtime(os.path.join(compressed, name))
            for name in os.listdir(compressed)}
  capsys.readouterr()
  assert cli.main(['compress', f'--checkpoint={trained}', f'--workdir={compressed}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'already holds a compressed model' in err[0]
  assert before == {name: os.path.getmtime(os.path.join(compressed, name))
                    for name in os.listdir(compressed)}
