"""Ready for accelerators, checked on CPU: no implicit host transfers in the loops,
bfloat16 compute, both layer formulations, the training split on the devices.

`jax.transfer_guard('disallow')` refuses implicit host-to-device transfers on
every backend, but XLA:CPU hands arrays to NumPy without a copy and so never
guards device-to-host reads (jax-ml/jax#16602). `no_implicit_transfers` adds most
of that half on CPU: a read of a device array's value outside `jax.device_get`
(`float(x)`, `int(x)`, `x.item()`, `x.tolist()`, formatting) and any
`block_until_ready` raise, where a GPU's guard would. Not caught on CPU:
`np.asarray(x)`, which NumPy reads through the C buffer protocol.
"""

import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.tree import norm as optax_norm
from flax import nnx
from jax._src import array as array_lib  # the one place device values are read
from jax._src import config as config_lib

from squeezejax import configs, data, layers, parallel, step, train
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'fashion_mnist.py')


@contextlib.contextmanager
def no_implicit_transfers(monkeypatch):
  value, block = array_lib.ArrayImpl._value, array_lib.ArrayImpl.block_until_ready

  def guarded_value(self):
    if not config_lib.guard_lib.thread_local_state().explicit_device_get:
      raise RuntimeError('implicit device-to-host transfer (outside jax.device_get)')
    return value.fget(self)

  def guarded_block(self):
    raise RuntimeError('block_until_ready: the host waits on the device')

  with monkeypatch.context() as m, jax.transfer_guard('disallow'):
    m.setattr(array_lib.ArrayImpl, '_value', property(guarded_value))
    m.setattr(array_lib.ArrayImpl, 'block_until_ready', guarded_block)
    yield


def test_the_guard_catches_each_kind_of_implicit_transfer(monkeypatch):
  x = jnp.arange(4.0)
  f = jax.jit(lambda a: a * 2)
  implicit = [lambda: float(x.sum()), lambda: int(x[:1].sum()), lambda: x.tolist(),
              lambda: f'{x.sum()}', lambda: f(np.ones(4, np.float32)), lambda: f(3.0),
              lambda: x + 1, lambda: x.block_until_ready()]
  with no_implicit_transfers(monkeypatch):
    for transfer in implicit:
      with pytest.raises(Exception, match='(?i)disallowed|implicit|block_until_ready'):
        transfer()
    # The explicit ones pass.
    np.testing.assert_array_equal(jax.device_get(f(jax.device_put(np.ones(4, np.float32)))), 2)


def test_train_and_eval_loops_make_no_implicit_transfers(tmp_path, monkeypatch):
  """Logging (a warmup-cosine schedule), evaluation, checkpoints, a resume and
  `squeezejax eval`: only the batch put and the explicit device_gets move data."""
  workdir = str(tmp_path)
  base = dict(num_devices=2, schedule='cosine', warmup_steps=2, eval_every=2,
              checkpoint_every=2, log_every=2)
  with no_implicit_transfers(monkeypatch):
    first = train.train_and_evaluate(
        configs.load(f'{CONFIG}:test', {**base, 'total_steps': 4}), workdir)
    # Resumed from step 4, with the split on the devices: nothing sent per step.
    second = train.train_and_evaluate(
        configs.load(f'{CONFIG}:test', {**base, 'total_steps': 6, 'data_on_device': 'on'}),
        workdir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      assert train.eval_main([f'--config={CONFIG}:test', f'--workdir={workdir}',
                              '--config.num_devices=2']) == 0
  assert first['steps'] == 4 and second['steps'] == 6
  assert json.loads(out.getvalue())['top1'] == pytest.approx(second['top1'])


def test_device_batches_are_exactly_the_host_batches():
  dataset = data.synthetic('train')  # 640 images: 20 batches of 32 per epoch
  host = data.InMemoryBatches(dataset, 32, seed=3)
  mesh = parallel.make_mesh(8)
  device = data.DeviceBatches(host, mesh)
  gather = jax.jit(device.gather)
  stream = device(17)
  for step_ in range(17, 43):  # across two epoch boundaries
    batch = gather(next(stream), jax.device_put(np.int32(step_)))
    expected = host.batch(step_)
    np.testing.assert_array_equal(jax.device_get(batch['image']), expected['image'])
    np.testing.assert_array_equal(jax.device_get(batch['label']), expected['label'])
    assert batch['image'].sharding.is_equivalent_to(parallel.batch_sharding(mesh), 4)


def test_training_with_the_split_on_the_devices_equals_the_host_path(tmp_path):
  runs = {}
  for where in ('off', 'on'):
    config = configs.load(f'{CONFIG}:test', dict(num_devices=2, total_steps=4,
                                                 data_on_device=where))
    runs[where] = train.train_and_evaluate(config, str(tmp_path / where))
  assert runs['on']['final_train_loss'] == pytest.approx(runs['off']['final_train_loss'],
                                                         rel=1e-6)
  assert runs['on']['top1'] == runs['off']['top1']


def test_data_on_device_refuses_a_streamed_dataset():
  config = configs.load(f'{CONFIG}:test', dict(dataset='imagenette', data_on_device='on'))
  source = data.Input(10, 10, tuple('abcdefghij'), 3, data.Preprocessing(16, (0.5,) * 3,
                                                                       (0.2,) * 3),
                      lambda start: iter(()), lambda: iter(()))
  with pytest.raises(UserError, match="data_on_device='on'"):
    data.on_device(config, source, parallel.make_mesh(1))


# -- bfloat16 ----------------------------------------------------------------------------

# Six SGD steps (lr 0.1, momentum 0.9) of bfloat16 compute against float32 on this
# test's tiny network; measured: losses within 1.5e-4 relative, parameters 0.07 of
# the distance float32 moved them.
BF16_LOSS_RTOL = 1e-3
BF16_PARAM_DRIFT = 0.15


def test_bfloat16_tracks_float32_and_keeps_float32_state():
  config = configs.load(f'{CONFIG}:test', {'optimizer': 'sgd', 'lr': 0.1, 'momentum': 0.9})
  spec = configs.spec_from_config(config, num_classes=10, in_channels=3)
  prep = data.Preprocessing(16, (0.5,) * 3, (0.25,) * 3, 'crop_flip')
  host = data.InMemoryBatches(data.synthetic('train'), 32, seed=0)
  tx = step.make_optimizer(config, step.make_schedule(config, 6),
                           model_lib.abstract_params(spec))
  losses, params = {}, {}
  for dtype in ('float32', 'bfloat16'):
    net = model_lib.create(spec, dtype=step.DTYPES[dtype])
    graphdef, _ = nnx.split(net)
    initial, batch_stats = model_lib.split_weights(net)
    state = {'params': initial, 'batch_stats': batch_stats, 'opt_state': tx.init(initial),
             'step': jnp.int32(0), 'seed': step.seeds(config)}
    train_step = jax.jit(step.make_train_step(graphdef, tx, config, prep))
    losses[dtype] = []
    for i in range(6):
      state, metrics = train_step(state, host.batch(i))
      assert metrics['loss'].dtype == jnp.float32
      losses[dtype].append(float(metrics['loss']))
    floats = {x.dtype for x in jax.tree.leaves((state['params'], state['opt_state']))
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype('float32')}, dtype  # parameters and momentum stay float32
    params[dtype] = state['params']
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], rtol=BF16_LOSS_RTOL)
  assert losses['bfloat16'] != losses['float32']  # bfloat16 really computes in bfloat16
  norm = lambda a, b: float(optax_norm(jax.tree.map(jnp.subtract, a, b)))
  moved = norm(params['float32'], initial)  # the same initial values for both dtypes
  assert moved > 0.05
  assert norm(params['bfloat16'], params['float32']) < BF16_PARAM_DRIFT * moved


# -- layer formulations ------------------------------------------------------------------


def test_resolve():
  assert layers.resolve('auto', 'cpu') == 'cpu'
  assert layers.resolve('auto', 'gpu') == layers.resolve('auto', 'tpu') == 'textbook'
  assert layers.resolve('textbook', 'cpu') == 'textbook'
  with pytest.raises(UserError, match="layers='fast'"):
    layers.resolve('fast')
  with pytest.raises(UserError, match='config.layers'):
    configs.load(f'{CONFIG}:test', {'layers': 'fast'})
  with pytest.raises(UserError, match="config.data_on_device='yes'"):
    configs.load(f'{CONFIG}:test', {'data_on_device': 'yes'})


@pytest.mark.parametrize('fields,size', [(dict(layout='small', bypass='complex'), 19),
                                         (dict(layout='v1.1', bypass='simple'), 35)],
                         ids=['small-complex-19px', 'v1.1-simple-35px'])
def test_both_formulations_give_the_same_outputs_and_gradients(fields, size):
  spec = spec_lib.SqueezeNetSpec(base_e=16, incr_e=16, num_classes=5, init='torchvision',
                                 **fields)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  labels = jnp.array([1, 3])
  graphdefs = {f: nnx.split(model_lib.create(spec, seed=1, formulation=f), nnx.Param)[0]
               for f in ('cpu', 'textbook')}
  params = nnx.to_pure_dict(nnx.split(model_lib.create(spec, seed=1), nnx.Param)[1])

  def loss(formulation, p):
    logits = nnx.merge(graphdefs[formulation], p)(x)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), logits

  def both(p):
    return {f: jax.value_and_grad(lambda q, f=f: loss(f, q), has_aux=True)(p)
            for f in graphdefs}

  # The switch changes the program: the textbook one pools with reduce_window.
  for f, graphdef in graphdefs.items():
    text = str(jax.make_jaxpr(lambda p, g=graphdef: nnx.merge(g, p)(x))(params))
    assert ('reduce_window_max' in text) == (f == 'textbook'), f
  out = jax.jit(both)(params)
  (cpu_loss, cpu_logits), cpu_grads = out['cpu']
  (ref_loss, ref_logits), ref_grads = out['textbook']
  np.testing.assert_allclose(cpu_logits, ref_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cpu_loss, ref_loss, rtol=1e-6)
  for (path, g), ref in zip(jax.tree.leaves_with_path(cpu_grads), jax.tree.leaves(ref_grads)):
    scale = float(np.abs(np.asarray(ref)).max()) + 1e-12
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


# -- scripts/accelerator_check.py ------------------------------------------------------


def test_accelerator_check_runs_every_part_with_tiny_sizes(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  script = os.path.join(os.path.dirname(__file__), '..', 'scripts', 'accelerator_check.py')
  proc = subprocess.run([sys.executable, script, '--tiny', f'--out={tmp_path}'],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / 'check.json') as f:
    report = json.load(f)
  assert report['environment']['device_kind'] and report['environment']['device_count'] >= 1
  assert report['peaks']['bfloat16'] > 0 and report['peaks']['float32'] > 0
  rows = report['train_steps']
  assert {r['layers'] for r in rows} == {'textbook', 'cpu'}
  for r in rows:
    assert r['dtype'] == 'bfloat16' and r['squeezejax_img_s'] > 0 and 0 < r['mfu']
    assert r['compile_train_s'] > 0 and r['compile_eval_s'] > 0
  assert 0 <= report['fashion_mnist_quick']['top1'] <= 1
  assert report['fashion_mnist_quick']['wall_s'] > 0
  assert report['fig3a_quick_sweep']['points'] == 2
  cap = report['input']
  assert cap['host_prefetched_img_s'] > 0 and cap['device_resident_img_s'] > 0
  assert isinstance(cap['input_caps_the_step'], bool)
  table = (tmp_path / 'check.md').read_text()
  assert '| squeezenet_small | 16 | 16 | bfloat16 | textbook |' in table
  assert 'Input caps the step:' in table


def test_accelerator_check_refuses_a_bad_formulation(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  script = os.path.join(os.path.dirname(__file__), '..', 'scripts', 'accelerator_check.py')
  proc = subprocess.run([sys.executable, script, '--tiny', f'--out={tmp_path}/o',
                         '--layers=fast'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "--layers='fast'" in proc.stderr
  assert not os.path.exists(tmp_path / 'o')
