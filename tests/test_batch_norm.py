"""BatchNorm statistics in the train state (a tiny SqueezeNeXt on synthetic data):
sharded like the parameters, checkpointed, restored onto any mesh, running averages
at evaluation, vmapped per seed; SIGKILL + rerun ends bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from squeezejax import checkpoint, configs, families, train
from squeezejax import model as model_lib

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, '..', 'experiments', 'squeezenext.py')
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': '',
       'JAX_NUM_CPU_DEVICES': '8'}


def load(**overrides):
  return configs.load(f'{CONFIG}:test', overrides)


def losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['loss'] for r in map(json.loads, f) if 'loss' in r]


def final_weights(workdir):
  return jax.tree.map(np.asarray, checkpoint.load_model(str(workdir))[1])


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  out = {}
  for name, overrides in [('one', dict(num_devices=1)), ('dp', dict(num_devices=8)),
                          ('fsdp', dict(num_devices=8, fsdp=True))]:
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = (workdir, train.train_and_evaluate(load(**overrides), workdir))
  return out


def test_batch_stats_are_trained_saved_and_counted_apart(runs):
  workdir, result = runs['one']
  spec, weights, _ = checkpoint.load_model(workdir)
  params, stats = model_lib.split_weights(weights, spec)
  assert result['params'] == spec.cost(16)['params'] == sum(x.size for x in jax.tree.leaves(params))
  means = [np.asarray(x) for path, x in jax.tree.leaves_with_path(stats)
           if 'mean' in jax.tree_util.keystr(path)]
  assert means and all(np.abs(m).max() > 0 for m in means)  # moved away from init (0)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '8', 'batch_stats'))


def test_same_losses_on_8_devices_data_parallel_and_fsdp(runs):
  one = losses(runs['one'][0])
  np.testing.assert_allclose(losses(runs['dp'][0]), one, rtol=2e-5)
  np.testing.assert_allclose(losses(runs['fsdp'][0]), one, rtol=2e-5)
  for name in ('dp', 'fsdp'):
    a, b = final_weights(runs[name][0]), final_weights(runs['one'][0])
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


def test_evaluation_uses_the_running_averages(runs):
  """The run's top-1 is what the saved weights (running averages) give, recomputed here."""
  workdir, result = runs['one']
  spec, weights, _ = checkpoint.load_model(workdir)
  from squeezejax import data
  source = data.make_input(load(num_devices=1))
  net = model_lib.from_params(spec, weights)
  correct = count = 0
  for batch in source.eval_batches():
    images = source.preprocessing.eval(batch['image']) if batch['image'].dtype == np.uint8 \
        else batch['image']
    logits = np.asarray(net(images))
    mask = np.asarray(batch['mask'], bool)
    correct += int(((logits.argmax(-1) == batch['label']) & mask).sum())
    count += int(mask.sum())
  assert count == result['eval_examples']
  assert correct / count == pytest.approx(result['top1'], abs=1e-9)
  # Batch statistics of one eval batch give other logits than the running averages.
  train_logits = np.asarray(net(images, train=True))
  assert not np.allclose(train_logits, logits, atol=1e-4)


def test_restore_onto_a_different_mesh(runs, tmp_path):
  import shutil
  workdir = str(tmp_path / 'moved')
  shutil.copytree(runs['one'][0], workdir)  # 8 steps on 1 device
  result = train.train_and_evaluate(load(num_devices=8, fsdp=True, total_steps=10), workdir)
  assert result['steps'] == 10 and checkpoint.saved_steps(workdir)[-1] == 10
  assert losses(workdir)[:4] == losses(runs['one'][0])


def test_vmapped_seeds_keep_their_own_statistics(runs, tmp_path):
  result = train.train_and_evaluate(load(num_devices=1, num_seeds=2), str(tmp_path))
  first, second = result['per_seed']
  assert first['final_train_loss'] == pytest.approx(runs['one'][1]['final_train_loss'], rel=1e-4)
  assert second['final_train_loss'] != pytest.approx(first['final_train_loss'], rel=1e-4)


def _train_cmd(workdir, *overrides):
  return [sys.executable, '-m', 'squeezejax', 'train', f'--config={CONFIG}:test',
          f'--workdir={workdir}', *overrides]


def test_sigkill_and_rerun_is_exact(tmp_path):
  steps = ['--config.total_steps=40', '--config.checkpoint_every=4', '--config.log_every=4',
           '--config.num_devices=1']
  ref = subprocess.run(_train_cmd(tmp_path / 'ref', *steps), env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert ref.returncode == 0, ref.stderr[-2000:]
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(_train_cmd(killed, *steps), env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not (killed / 'checkpoints' / '8').exists() and time.time() < deadline:
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / 'result.json').exists(), 'the run finished before it was killed'
  out = subprocess.run(_train_cmd(killed, *steps), env=ENV, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert 'resumed from step' in out.stdout
  with open(killed / 'result.json') as f, open(tmp_path / 'ref' / 'result.json') as g:
    resumed, reference = json.load(f), json.load(g)
  assert resumed['top1'] == reference['top1']
  assert resumed['final_train_loss'] == reference['final_train_loss']
  assert losses(killed) == losses(tmp_path / 'ref')
  # Parameters and BatchNorm running averages, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, final_weights(killed),
               final_weights(tmp_path / 'ref'))


def test_squeezenet_with_batch_norm_trains(tmp_path):
  spec = families.preset('squeezenet_small', base_e=16, incr_e=16, batch_norm=True)
  arrays = nnx_param_count(spec)
  assert arrays == spec.cost()['params']
  fm = os.path.join(HERE, '..', 'experiments', 'fashion_mnist.py')
  result = train.train_and_evaluate(
      configs.load(f'{fm}:test', {'num_devices': 2, 'spec.batch_norm': True}), str(tmp_path))
  assert result['spec']['batch_norm'] and np.isfinite(result['final_train_loss'])
  _, weights, _ = checkpoint.load_model(str(tmp_path))
  assert 'mean' in weights['fires'][0]['squeeze_bn']


def nnx_param_count(spec):
  return sum(x.size for x in jax.tree.leaves(model_lib.abstract_params(spec)))
