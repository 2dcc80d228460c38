"""The trainer on the tiny `test` preset (synthetic data, 16 px, base_e=16).

Same losses on 1 and 8 devices (data parallel and FSDP) and across two
jax.distributed processes; SIGKILL + rerun ends bit-identical to an
uninterrupted run; exact masked evaluation; no recompilation.
"""

import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from squeezejax import checkpoint, configs, data, programs, step, train
from squeezejax import model as model_lib
from squeezejax.errors import UserError

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'fashion_mnist.py')
ENV = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': '', 'JAX_NUM_CPU_DEVICES': '8'}


def load(**overrides):
  return configs.load(f'{CONFIG}:test', overrides)


def losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [r['loss'] for r in records if 'loss' in r]


def final_params(workdir):
  _, params, _ = checkpoint.load_model(workdir)
  return jax.tree.map(np.asarray, params)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The same 8 steps on 1 device, 8 devices, and 8 devices with FSDP."""
  out = {}
  for name, overrides in [('one', dict(num_devices=1)), ('dp', dict(num_devices=8)),
                          ('fsdp', dict(num_devices=8, fsdp=True))]:
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = (workdir, train.train_and_evaluate(load(**overrides), workdir))
  return out


def test_result_json(runs):
  workdir, result = runs['one']
  with open(os.path.join(workdir, 'result.json')) as f:
    saved = json.load(f)
  for key in ('config', 'params', 'size_mib', 'steps', 'final_train_loss', 'top1', 'top5',
              'train_img_s', 'wall_s', 'versions', 'device_kind', 'device_count', 'git_commit'):
    assert key in saved, key
  assert saved['steps'] == 8 and saved['device_count'] == jax.device_count()
  assert 0 <= saved['top1'] <= saved['top5'] <= 1
  assert saved['params'] == sum(x.size for x in jax.tree.leaves(final_params(workdir)))
  assert len(losses(workdir)) == 4  # log_every=2
  # TensorBoard's own reader finds the logged losses in the event file.
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  events.Reload()
  logged = events.Scalars('loss')
  assert [e.step for e in logged] == [2, 4, 6, 8]
  assert [e.value for e in logged] == pytest.approx(losses(workdir), rel=1e-6)
  timing = saved['timing']  # where the wall time went: phases, and beyond the steps
  phases = [v for k, v in timing.items() if k not in ('steady_train_s', 'overhead_s')]
  assert {'setup_s', 'input_s', 'compile_s', 'init_s', 'train_s', 'eval_s'} <= timing.keys()
  assert 0 < sum(phases) <= saved['wall_s'] and min(phases) >= 0
  assert timing['overhead_s'] == pytest.approx(saved['wall_s'] - timing['steady_train_s'], abs=2e-3)


def test_same_losses_on_8_devices_data_parallel_and_fsdp(runs):
  one = losses(runs['one'][0])
  np.testing.assert_allclose(losses(runs['dp'][0]), one, rtol=2e-5)
  np.testing.assert_allclose(losses(runs['fsdp'][0]), one, rtol=2e-5)
  assert runs['dp'][1]['top1'] == pytest.approx(runs['one'][1]['top1'], abs=1 / 300)


def test_evaluation_is_exact(runs):
  # 300 synthetic test images, eval batches of 48: the last batch is padded.
  _, result = runs['dp']
  assert result['eval_examples'] == 300
  correct = result['top1'] * 300
  assert abs(correct - round(correct)) < 1e-6


def test_learns_something(tmp_path):
  result = train.train_and_evaluate(
      load(num_devices=2, total_steps=100, log_every=50, lr=5e-3, **{'spec.dropout_rate': 0.0}),
      str(tmp_path))
  # A broken trainer stays at chance (top-1 0.1, loss ln 10 = 2.30). (The tiny
  # 16 px network learns these stripes slowly; real accuracy is the README's
  # Fashion-MNIST run.)
  assert result['top1'] > 0.2 and result['final_train_loss'] < 1.9, result


def test_resume_is_a_noop_when_done(runs, caplog):
  workdir, first = runs['fsdp']
  with caplog.at_level(logging.WARNING):
    again = train.train_and_evaluate(load(num_devices=8, fsdp=True), workdir)
  assert again['top1'] == first['top1'] and again['steps'] == 8


def test_each_program_compiles_once(tmp_path, caplog):
  # The steps are compiled ahead of the loop: the loop's calls must reuse them.
  jax.config.update('jax_log_compiles', True)
  try:
    with caplog.at_level(logging.WARNING, logger='jax'):
      train.train_and_evaluate(load(num_devices=1, total_steps=6), str(tmp_path))
  finally:
    jax.config.update('jax_log_compiles', False)
  for program in ('train_step', 'eval_step', 'init_state', 'unravel'):
    compiles = [r for r in caplog.records
                if r.getMessage().startswith(f'Compiling jit({program})')]
    assert len(compiles) == 1, (program, len(compiles))


def test_seeds_share_compiled_programs(tmp_path):
  # A sweep's seeds of one point differ only in the seed, which is an argument of the
  # programs: the persistent compilation cache holds one train step and one initialiser
  # for both, and the seed still reaches them (dropout and augmentation on).
  from squeezejax import job
  previous = jax.config.jax_compilation_cache_dir
  job.setup_compilation_cache(str(tmp_path / 'cache'))
  try:
    results = [train.train_and_evaluate(
        load(num_devices=1, seed=seed, augment='crop_flip', **{'spec.dropout_rate': 0.5}),
        str(tmp_path / str(seed))) for seed in (0, 1)]
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
    from jax.experimental.compilation_cache import compilation_cache
    compilation_cache.reset_cache()
  entries = os.listdir(tmp_path / 'cache')
  for program in ('jit_train_step', 'jit_init_state', 'jit_eval_step'):
    assert len([e for e in entries if e.startswith(program + '-')]) == 1, (program, entries)
  assert results[0]['final_train_loss'] != results[1]['final_train_loss']
  assert not np.array_equal(*[jax.tree.leaves(final_params(str(tmp_path / str(seed))))[0]
                              for seed in (0, 1)])


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _train_cmd(workdir, *overrides):
  return [sys.executable, '-m', 'squeezejax', 'train', f'--config={CONFIG}:test',
          f'--workdir={workdir}', *overrides]


def test_two_processes_match_one(runs, tmp_path):
  port = _free_port()
  env = {**ENV, 'JAX_NUM_CPU_DEVICES': '2'}
  procs = [subprocess.Popen(
      _train_cmd(tmp_path, f'--config.coordinator_address=localhost:{port}',
                 '--config.num_processes=2', f'--config.process_id={i}'),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert '4 x cpu over 2 process(es)' in outs[0]
  np.testing.assert_allclose(losses(tmp_path), losses(runs['one'][0]), rtol=2e-5)
  with open(tmp_path / 'result.json') as f:
    assert json.load(f)['top1'] == pytest.approx(runs['one'][1]['top1'], abs=1 / 300)


def test_sigkill_and_rerun_is_exact(tmp_path):
  steps = ['--config.total_steps=40', '--config.checkpoint_every=4', '--config.log_every=4',
           '--config.num_devices=1']
  # The reference runs in a fresh process too: XLA's CPU code generation may differ
  # in the last bits between a fresh process and this long-lived test process.
  ref = subprocess.run(_train_cmd(tmp_path / 'ref', *steps), env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert ref.returncode == 0, ref.stderr[-2000:]
  with open(tmp_path / 'ref' / 'result.json') as f:
    reference = json.load(f)
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
  with open(killed / 'result.json') as f:
    resumed = json.load(f)
  assert resumed['top1'] == reference['top1'] and resumed['top5'] == reference['top5']
  assert resumed['final_train_loss'] == reference['final_train_loss']
  assert losses(killed) == losses(tmp_path / 'ref')  # old lines after the checkpoint dropped
  jax.tree.map(np.testing.assert_array_equal, final_params(killed),
               final_params(tmp_path / 'ref'))


@pytest.mark.parametrize('num_seeds', [1, 2])
def test_resuming_mid_log_window_logs_the_same_losses(tmp_path, num_seeds):
  # Checkpoints every 3 steps, logs every 4: the checkpoints at steps 6 and 9 fall inside
  # a log window, whose partial sums must carry over to the last bit.
  config = load(num_devices=1, num_seeds=num_seeds, total_steps=12, log_every=4,
                checkpoint_every=3, keep_checkpoints=10)
  reference = train.train_and_evaluate(config, str(tmp_path / 'ref'))
  for resume_at in (6, 9):
    workdir = tmp_path / f'from{resume_at}'
    shutil.copytree(tmp_path / 'ref', workdir)
    os.remove(workdir / 'result.json')
    for saved in checkpoint.saved_steps(str(workdir)):
      if saved > resume_at:
        shutil.rmtree(workdir / 'checkpoints' / str(saved))
    resumed = train.train_and_evaluate(config, str(workdir))
    assert resumed['final_train_loss'] == reference['final_train_loss']
    assert losses(workdir) == losses(tmp_path / 'ref')


def test_sigterm_saves_and_exits(tmp_path):
  proc = subprocess.Popen(_train_cmd(tmp_path, '--config.total_steps=100000',
                                     '--config.checkpoint_every=100000', '--config.num_devices=1'),
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-2000:]
  assert 'preempted at step' in err
  assert checkpoint.saved_steps(str(tmp_path))


@pytest.mark.parametrize('overrides,match', [
    (dict(batch_size=30, num_devices=8), 'batch_size=30'),
    (dict(optimizer='adam'), "optimizer='adam'"),
    (dict(dataset='mnist_typo'), 'mnist_typo'),
    (dict(accum_steps=5), 'accum_steps=5'),
    (dict(batch_splits=-1), 'batch_splits=-1'),
    (dict(batch_splits=3, num_devices=1), 'batch_splits=3'),
    (dict(cpu_convolutions='mkl'), "cpu_convolutions='mkl'"),
])
def test_bad_config_values(tmp_path, overrides, match):
  with pytest.raises(UserError, match=match):
    train.train_and_evaluate(load(**overrides), str(tmp_path))


def test_cli_errors_are_one_line(tmp_path):
  (tmp_path / 'a_file').write_text('')
  cases = [
      (tmp_path / 'w', ['--config.no_such_key=1'], 'no_such_key'),
      (tmp_path / 'w', ['--config.batch_size=30', '--config.num_devices=8'], 'batch_size=30'),
      (tmp_path / 'w', ['--config.seed_axis=pmap'],
       "seed_axis='pmap' is not allowed: expected one of auto, vmap, map"),
      # Unwritable even for root: the workdir's parent is a regular file.
      (tmp_path / 'a_file' / 'w', [], 'not writable'),
  ]
  for workdir, extra, match in cases:
    out = subprocess.run(_train_cmd(workdir, *extra), env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and match in out.stderr, out.stderr[-2000:]
    assert 'Traceback' not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
  """accum_steps=4 averages micro-batch gradients: the same update as one batch of 32."""
  plain = dict(num_devices=1, augment='none', **{'spec.dropout_rate': 0.0})
  full = train.train_and_evaluate(load(**plain), str(tmp_path / 'full'))
  accumulated = train.train_and_evaluate(load(accum_steps=4, **plain), str(tmp_path / 'accum'))
  np.testing.assert_allclose(losses(tmp_path / 'accum'), losses(tmp_path / 'full'), rtol=1e-4)
  assert accumulated['top1'] == pytest.approx(full['top1'], abs=1.5 / 300)


def test_batch_splits_give_the_full_batch_update():
  """batch_splits=4 averages four sub-batch gradients: the same step as splits=1."""
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from squeezejax import model as model_lib
  from squeezejax import spec as spec_lib
  config = load(**{'spec.dropout_rate': 0.0})
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16, num_classes=10,
                         dropout_rate=0.0)
  graphdef, params = nnx.split(model_lib.create(spec), nnx.Param)
  params = nnx.to_pure_dict(params)
  tx = step.make_optimizer(config, optax.constant_schedule(0.1), params)
  state = {'params': params, 'batch_stats': {}, 'opt_state': tx.init(params),
           'step': jnp.int32(0), 'seed': step.seeds(config)}
  rng = np.random.default_rng(0)
  batch = {'image': rng.standard_normal((32, 16, 16, 3), np.float32),
           'label': rng.integers(0, 10, 32).astype(np.int32)}
  prep = data.Preprocessing(16, (0.5,) * 3, (0.25,) * 3)
  out = {k: jax.jit(step.make_train_step(graphdef, tx, config, prep, k))(
      state, batch) for k in (1, 4)}
  np.testing.assert_allclose(out[4][1]['loss'], out[1][1]['loss'], rtol=1e-5)
  assert out[4][1]['top1'] == out[1][1]['top1']
  for split, whole in zip(jax.tree.leaves(out[4][0]['params']),
                          jax.tree.leaves(out[1][0]['params'])):
    np.testing.assert_allclose(split, whole, rtol=1e-4, atol=1e-5)
  assert not np.allclose(out[1][0]['params']['conv10']['kernel'], params['conv10']['kernel'])


def test_the_parameters_as_one_vector_take_the_steps_of_their_tree():
  """Without fsdp the state holds the parameters as one vector (step.flat_optimizer):
  to the bit the steps of the same optimizer on their tree; checkpoints hold the tree."""
  from squeezejax import parallel
  mesh = parallel.make_mesh(1)
  config = load(num_devices=1, optimizer='adamw', grad_clip=1.0)
  source = data.make_input(config)
  run = programs.build(config, mesh, source)
  assert jax.tree.structure(run.abstract_state['params']).num_leaves == 1
  tree = model_lib.abstract_params(run.spec)
  assert run.saved_abstract['params'] == jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)), tree)
  assert jax.tree.structure(programs.build(load(num_devices=1, fsdp=True), mesh, source)
                            .abstract_state['params']) == jax.tree.structure(tree)  # fsdp's
  tree_step = parallel.jit(step.make_train_step(nnx.graphdef(model_lib.create(run.spec)), run.tx,
                                                config, source.preprocessing, run.splits),
                           config.cpu_convolutions)  # the trainer's convolutions
  state = run.init(jax.device_put(run.seeds, run.shardings['seed']))
  on_tree = jax.tree.map(np.array, {**run.saved(state), 'step': state['step'], 'seed': run.seeds})
  batches = run.batches(source, 0)
  with jax.set_mesh(mesh):
    for _ in range(3):
      batch = next(batches)
      state, _ = run.train_step(state, batch)
      on_tree, _ = tree_step(on_tree, batch)
  for a, b in zip(jax.tree.leaves(run.saved(state)['params']), jax.tree.leaves(on_tree['params']),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  initial = run.saved(run.init(jax.device_put(run.seeds)))['params']
  assert not np.array_equal(on_tree['params']['conv10']['kernel'], initial['conv10']['kernel'])
  assert np.array_equal(run.from_saved(run.saved(state))['params'], state['params'])


@pytest.mark.parametrize('fields', [dict(optimizer='adamw', grad_clip=1.0),
                                    dict(optimizer='sgd')])
def test_the_optimizer_on_one_flat_vector_is_the_per_parameter_one(fields):
  """Without fsdp the optimizer works on one vector of every parameter: the same
  updates as per parameter (what fsdp keeps), its state one vector per moment."""
  import optax
  from squeezejax import spec as spec_lib
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16, num_classes=10)
  params = model_lib.split_weights(model_lib.create(spec))[0]
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
           for _ in range(3)]
  out = {}
  for fsdp in (False, True):
    tx = step.make_optimizer(load(fsdp=fsdp, **fields), optax.constant_schedule(0.1), params)
    state, p = tx.init(params), params
    for g in grads:
      u, state = jax.jit(tx.update)(g, state, p)
      p = optax.apply_updates(p, u)
    out[fsdp] = (p, jax.tree.leaves(state))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               out[False][0], out[True][0])
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(out[False][0]) == shapes(params)
  assert not np.allclose(out[False][0]['conv10']['kernel'], params['conv10']['kernel'])
  assert len(out[False][1]) < len(jax.tree.leaves(params)) < len(out[True][1])


def test_cpu_convolution_libraries_compute_the_same_network():
  """'eigen' takes the convolutions away from YNNPACK (fewer YNN fusions), same numbers."""
  from flax import nnx
  from squeezejax import model as model_lib
  from squeezejax import parallel
  from squeezejax import spec as spec_lib
  graphdef, params = nnx.split(model_lib.create(spec_lib.preset('squeezenet_small', base_e=16,
                                                                 incr_e=16)), nnx.Param)
  images = np.random.default_rng(0).standard_normal((4, 16, 16, 3), np.float32)
  loss = lambda p: nnx.merge(graphdef, p)(images).sum()
  outputs, ynn_fusions = {}, {}
  for name in ('eigen', 'ynnpack'):  # XLA's own two ('onednn': tests/test_onednn.py)
    fn = parallel.jit(jax.value_and_grad(loss), name)
    ynn_fusions[name] = fn.lower(params).compile().as_text().count('__ynn_fusion')
    outputs[name] = fn(params)
  assert ynn_fusions['eigen'] < ynn_fusions['ynnpack']
  for a, b in zip(jax.tree.leaves(outputs['eigen']), jax.tree.leaves(outputs['ynnpack'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_eval_command_matches_the_run(runs, capsys):
  workdir, result = runs['one']
  assert train.eval_main([f'--config={CONFIG}:test', f'--workdir={workdir}',
                          '--config.num_devices=1']) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert metrics['top1'] == pytest.approx(result['top1'], abs=1e-9)
  assert metrics['eval_examples'] == 300


def test_restore_onto_a_different_device_count(runs, tmp_path):
  import shutil
  workdir = str(tmp_path / 'moved')
  shutil.copytree(runs['one'][0], workdir)  # trained for 8 steps on 1 device
  result = train.train_and_evaluate(load(num_devices=8, fsdp=True, total_steps=10), workdir)
  assert result['steps'] == 10
  assert checkpoint.saved_steps(workdir)[-1] == 10


def test_resume_across_the_optimizer_layouts(runs, tmp_path):
  """An fsdp run (optimizer state per parameter) resumed without fsdp (one flat
  vector), and back: the same steps as resuming it as it was written."""
  import shutil
  out = {}
  for name, fsdp in (('as_written', True), ('flat', False)):
    workdir = str(tmp_path / name)
    shutil.copytree(runs['fsdp'][0], workdir)  # 8 steps, fsdp
    out[name] = train.train_and_evaluate(load(num_devices=8, fsdp=fsdp, total_steps=10),
                                         workdir)
    assert losses(workdir)[:4] == losses(runs['fsdp'][0])  # resumed, not started again
  np.testing.assert_allclose(losses(tmp_path / 'flat'), losses(tmp_path / 'as_written'),
                             rtol=1e-5)
  back = train.train_and_evaluate(load(num_devices=8, fsdp=True, total_steps=12),
                                  str(tmp_path / 'flat'))
  assert back['steps'] == 12 and len(losses(tmp_path / 'flat')) > 5


def test_damaged_latest_checkpoint_falls_back(runs, tmp_path, caplog):
  import shutil
  workdir = tmp_path / 'damaged'
  shutil.copytree(runs['dp'][0], workdir)
  os.remove(workdir / 'result.json')
  for path in (workdir / 'checkpoints' / '8' / 'params').rglob('*'):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b'\0garbage')
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(load(num_devices=8), str(workdir))
  assert any('checkpoint 8' in r.getMessage() and 'unreadable' in r.getMessage()
             for r in caplog.records)
  assert result['top1'] == runs['dp'][1]['top1']  # steps 5..8 redone from checkpoint 4


def test_a_checkpoint_of_another_optimizer_is_an_error_and_is_kept(runs, tmp_path):
  """Resuming an AdamW run with SGD: a clear error; no checkpoint is taken for
  damage, deleted or overwritten."""
  import shutil
  workdir = tmp_path / 'other'
  shutil.copytree(runs['dp'][0], workdir)
  os.remove(workdir / 'result.json')
  before = {str(p): p.stat().st_mtime_ns for p in workdir.rglob('*')}
  with pytest.raises(UserError, match=r'checkpoint 8 .* holds a different state .*optimizer'):
    train.train_and_evaluate(load(num_devices=8, optimizer='sgd'), str(workdir))
  assert {str(p): p.stat().st_mtime_ns for p in workdir.rglob('*')
          if 'checkpoints' in str(p)} == {k: v for k, v in before.items() if 'checkpoints' in k}
  assert checkpoint.saved_steps(str(workdir)) == checkpoint.saved_steps(runs['dp'][0])


@pytest.fixture(scope='module')
def seed_runs(tmp_path_factory):
  """8 steps on 1 device: seed 0 alone, and seeds 0 and 1 in one step by each seed_axis."""
  out = {}
  for name, overrides in [('seed0', dict(seed=0)),
                          ('vmap', dict(num_seeds=2, seed_axis='vmap')),
                          ('map', dict(num_seeds=2, seed_axis='map'))]:
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = (workdir, train.train_and_evaluate(load(num_devices=1, **overrides), workdir))
  return out


def test_seeds_resume_across_the_optimizer_layouts(seed_runs, tmp_path):
  """Two seeds in one step, written flat, resumed with fsdp (state per parameter)."""
  import shutil
  workdir = str(tmp_path / 'fsdp')
  shutil.copytree(seed_runs['map'][0], workdir)
  result = train.train_and_evaluate(
      load(num_devices=1, num_seeds=2, seed_axis='map', fsdp=True, total_steps=10), workdir)
  assert result['steps'] == 10 and losses(workdir)[:4] == losses(seed_runs['map'][0])


def seed_params(workdir, num_seeds):
  """The newest checkpoint's parameters, with their leading seed axis."""
  spec, _ = checkpoint.read_model_json(workdir)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_seeds, *x.shape), x.dtype,
                                                         sharding=device),
                          model_lib.abstract_params(spec))
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, checkpoint.CHECKPOINTS))
  try:
    _, items, _ = checkpointer.restore_latest({'params': abstract})
  finally:
    checkpointer.close()
  return jax.tree.map(np.asarray, items['params'])


@pytest.mark.parametrize('seed_axis', ['vmap', 'map'])
def test_seeds_in_one_run_match_separate_runs(seed_runs, seed_axis):
  workdir, result = seed_runs[seed_axis]
  assert result['seed_axis'] == seed_axis and seed_runs['seed0'][1]['seed_axis'] is None
  first, second = result['per_seed']
  assert (first['seed'], second['seed']) == (0, 1)
  # Seed 0 of the pair is the single-seed run (same data order and keys; the data order
  # is seed 0's for every seed of a run, so seed 1 is checked step by step below).
  alone_dir, alone = seed_runs['seed0']
  assert first['final_train_loss'] == pytest.approx(alone['final_train_loss'], rel=1e-4)
  assert first['top1'] == pytest.approx(alone['top1'], abs=1.5 / 300)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-3, atol=1e-5),
               seed_params(workdir, 2), final_params(alone_dir))
  assert second['final_train_loss'] != pytest.approx(first['final_train_loss'], rel=1e-4)
  assert result['top1'] == pytest.approx((first['top1'] + second['top1']) / 2)


@pytest.mark.parametrize('seed_axis', ['vmap', 'map'])
def test_each_seed_of_a_step_is_its_single_seed_step(seed_axis):
  """On the same batches, seed i of a two-seed step is the one-seed step with seed i."""
  config = load(num_devices=1, num_seeds=2, seed_axis=seed_axis)
  source = data.make_input(config)
  spec = configs.spec_from_config(config, num_classes=source.num_classes,
                                  in_channels=source.channels)
  graphdef = nnx.graphdef(model_lib.create(spec))
  tx = step.make_optimizer(config, step.make_schedule(config, 8),
                           model_lib.abstract_params(spec))
  batches = list(itertools.islice(source.train_batches(0), 3))

  def init(seed):
    params, batch_stats = model_lib.split_weights(model_lib.create(spec, seed=seed))
    return {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params),
            'step': jnp.int32(0), 'seed': jnp.int32(seed)}

  def run(config, state):
    train_step = jax.jit(step.make_train_step(graphdef, tx, config, source.preprocessing))
    for batch in batches:
      state, metrics = train_step(state, batch)
    return state, metrics

  pair = {**jax.tree.map(lambda *xs: jnp.stack(xs), init(0), init(1)), 'step': jnp.int32(0)}
  pair, metrics = run(config, pair)
  for i in range(2):
    alone, alone_metrics = run(load(num_devices=1, seed=i), init(i))
    np.testing.assert_allclose(metrics['loss'][i], alone_metrics['loss'], rtol=1e-5)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6),
                 pair['params'], alone['params'])


def test_map_and_vmap_seeds_agree_and_share_checkpoints(seed_runs, tmp_path):
  (map_dir, by_map), (vmap_dir, by_vmap) = seed_runs['map'], seed_runs['vmap']
  np.testing.assert_allclose(losses(map_dir), losses(vmap_dir), rtol=2e-5)
  for a, b in zip(by_map['per_seed'], by_vmap['per_seed']):
    assert a['final_train_loss'] == pytest.approx(b['final_train_loss'], rel=2e-5)
    assert a['top1'] == pytest.approx(b['top1'], abs=1.5 / 300)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               seed_params(map_dir, 2), seed_params(vmap_dir, 2))
  # The same state layout: a 'map' run resumes as a 'vmap' one.
  import shutil
  workdir = str(tmp_path / 'resumed')
  shutil.copytree(map_dir, workdir)
  result = train.train_and_evaluate(
      load(num_devices=1, num_seeds=2, seed_axis='vmap', total_steps=10), workdir)
  assert result['steps'] == 10 and result['seed_axis'] == 'vmap'
  assert losses(workdir)[:4] == losses(map_dir)
  assert step.resolve_seed_axis('auto') == ('map' if jax.default_backend() == 'cpu' else 'vmap')


# -- one source of truth: presets, durations, read-only model directories ----------------


def test_a_preset_wins_over_unset_spec_fields(tmp_path):
  """--config.model=squeezenet1_0_simple trains a simple-bypass network (the test
  preset sets only base_e/incr_e, which win over the preset's)."""
  result = train.train_and_evaluate(
      load(model='squeezenet1_0_simple', image_size=32, total_steps=1, num_devices=1),
      str(tmp_path))
  assert result['spec']['bypass'] == 'simple' and result['spec']['layout'] == 'v1.0'
  assert result['spec']['base_e'] == 16  # set by the experiment file: wins over the preset
  spec, _ = checkpoint.read_model_json(str(tmp_path))
  assert spec.bypass == 'simple'


def test_a_duration_on_the_command_line_replaces_the_presets():
  quick = f'{os.path.dirname(CONFIG)}/fashion_mnist.py:quick'
  config = configs.load(quick, {'total_steps': '3'})  # the preset says num_epochs=10
  assert config.num_epochs is None and configs.total_steps(config, 60_000) == 3
  assert configs.total_steps(configs.load(quick), 60_000) == 4688  # 10 epochs of 128
  config = configs.load(f'{CONFIG}:test', {'num_epochs': '0.5'})  # the preset says 8 steps
  assert config.total_steps is None and configs.total_steps(config, 640) == 10
  for bad, match in [({'total_steps': '-5'}, 'total_steps=-5'),
                     ({'num_epochs': '0'}, 'num_epochs=0.0'),
                     ({'total_steps': '3', 'num_epochs': '1'}, 'both set')]:
    with pytest.raises(UserError, match=match):
      configs.load(quick, bad)


def test_quick_preset_trains_the_steps_given(tmp_path):
  quick = f'{os.path.dirname(CONFIG)}/fashion_mnist.py:quick'
  out = subprocess.run(
      [sys.executable, '-m', 'squeezejax', 'train', f'--config={quick}',
       f'--workdir={tmp_path}', '--config.total_steps=-5'],
      env=ENV, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and 'total_steps=-5' in out.stderr, out.stderr[-2000:]
  config = configs.load(quick, {'total_steps': '3', 'spec.base_e': '8', 'spec.incr_e': '8',
                                'num_devices': '1', 'eval_batch_size': '2000'})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result['steps'] == 3 and checkpoint.saved_steps(str(tmp_path)) == [3]


def _snapshot(root):
  """(relative path, size, mtime, bytes) of every file and directory under root."""
  out = []
  for path in sorted(root.rglob('*')):
    stat = path.stat()
    out.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns,
                path.read_bytes() if path.is_file() else None))
  return out


def test_readers_never_change_a_model_directory(runs, tmp_path, caplog, capsys):
  """predict, eval and export on a directory whose newest checkpoint is damaged (or
  being written) and which is read-only: every file stays byte-identical."""
  import shutil
  from PIL import Image
  from squeezejax import export, predict
  workdir = tmp_path / 'model'
  shutil.copytree(runs['dp'][0], workdir)
  for path in (workdir / 'checkpoints' / '8' / 'params').rglob('*'):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b'\0garbage')
  image = tmp_path / 'x.png'
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
  for path in [workdir, *workdir.rglob('*')]:
    path.chmod(path.stat().st_mode & ~0o222)
  before = _snapshot(workdir)
  try:
    with caplog.at_level(logging.WARNING):
      spec, params, _ = checkpoint.load_model(str(workdir))
      assert predict.main([f'--checkpoint={workdir}', str(image)]) == 0
      assert train.eval_main([f'--config={CONFIG}:test', f'--workdir={workdir}',
                              '--config.num_devices=1']) == 0
      assert export.main([f'--checkpoint={workdir}', '--format=stablehlo',
                          f'--out={tmp_path / "m.stablehlo"}']) == 0
  finally:
    after = _snapshot(workdir)
    for path in [workdir, *workdir.rglob('*')]:
      path.chmod(path.stat().st_mode | 0o200)
  assert after == before
  assert any('checkpoint 8' in r.getMessage() for r in caplog.records)
  # The fallback is checkpoint 4, not the damaged 8: its conv10 differs from the final one.
  final = jax.tree.map(np.asarray, checkpoint.load_model(runs['dp'][0])[1])
  assert not np.array_equal(params['conv10']['kernel'], final['conv10']['kernel'])
