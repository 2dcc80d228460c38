"""The trainer: one config, one workdir, read top to bottom.

  squeezejax train --config=experiments/fashion_mnist.py:quick --workdir=runs/fmnist

config -> mesh -> input -> spec, model and optimizer -> state (created in its
shardings) -> resume or initialise -> compiled steps -> loop (log, evaluate,
checkpoint) -> result. `train_and_evaluate(config, workdir)` is what the CLI,
sweeps and tests call. A rerun with the same workdir resumes from the newest
checkpoint; the data order, augmentation and dropout are pure functions of
(seed, step), so a resumed run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from squeezejax import checkpoint as checkpoint_lib
from squeezejax import cli, configs, data, files, parallel, run_log, step as step_lib
from squeezejax import model as model_lib
from squeezejax.errors import Preempted, UserError, on_sigterm

# The state's parts that checkpoints leave out: the step is the checkpoint's own, the
# seeds come from the config.
NOT_SAVED = ('step', 'seed')


def say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from workdir), evaluates, writes and returns result.json's dict."""
  t_start = time.time()
  clock = run_log.Stopwatch()
  configs.validate(config)
  parallel.initialize_distributed(config.coordinator_address, config.num_processes,
                                  config.process_id)
  _check_workdir(workdir)

  # -- mesh and input -----------------------------------------------------------------
  mesh = parallel.make_mesh(config.num_devices)
  per_process, per_device = parallel.check_batch(mesh, config.batch_size)
  parallel.check_batch(mesh, config.eval_batch_size, 'eval_batch_size')
  clock.lap('setup')
  source = data.make_input(config)
  clock.lap('input')

  # -- spec, model, optimizer, state shardings and jitted steps -------------------------
  run = build(config, mesh, source)
  spec, steps, shardings = run.spec, run.steps, run.shardings
  prep = source.preprocessing
  _check_same_run(workdir, spec, config.dataset)
  run_lock = contextlib.ExitStack()  # one trainer per run directory (released on exit)
  if jax.process_index() == 0:
    run_lock.enter_context(files.lock(workdir, 'squeezejax train'))
  say(f'devices: {mesh.size} x {jax.devices()[0].device_kind} over '
      f'{jax.process_count()} process(es); batch {config.batch_size} global, '
      f'{per_process} per process, {per_device} per device'
      + (f', {config.batch_size // config.accum_steps} per micro-batch' if config.accum_steps > 1 else '')
      + (f', gradients over {run.splits} sub-batches' if run.splits > 1 else '')
      + (f'; {config.num_seeds} seeds per step, seed_axis={run.seed_axis}'
         if run.seed_axis else ''))
  # The logged rate: optax schedules are jnp code, so an eager call would send the
  # step implicitly; this sends and fetches it explicitly (at log steps only).
  lr_at = jax.jit(run.schedule)
  learning_rate = lambda step: float(jax.device_get(
      lr_at(jax.device_put(np.int32(step), parallel.replicated(mesh)))))
  cost = spec.cost(prep.image_size)
  say(f'model: {spec.family} {cost["params"]:,} parameters ({cost["size_mib"]:.2f} MiB), '
      f'{cost["macs"] / 1e6:.1f} MMACs at {prep.image_size}px; {steps} steps '
      f'({steps / (source.num_train // config.batch_size):.2f} epochs)')

  # -- resume from the newest checkpoint, or initialise --------------------------------
  checkpointer = checkpoint_lib.Checkpointer(
      os.path.join(workdir, checkpoint_lib.CHECKPOINTS), keep=config.keep_checkpoints)
  restored = checkpointer.restore_latest(
      {k: v for k, v in run.saved_abstract.items() if k not in NOT_SAVED},
      lambda: _other_optimizer_layouts(config, run))
  if restored is not None:
    start_step, items, meta = restored
    state = {**run.from_saved(items),
             'step': jax.device_put(np.int32(start_step), shardings['step']),
             'seed': jax.device_put(run.seeds, shardings['seed'])}
    window = run_log.LogWindow(meta.get('window'))
    say(f'resumed from step {start_step} in {workdir}')
  else:
    start_step, window, state = 0, run_log.LogWindow(), None
  checkpoint_lib.write_model_json(workdir, spec, {
      'preprocessing': {'kind': 'dataset', 'mean': list(prep.mean), 'std': list(prep.std),
                        'image_size': prep.image_size},
      'class_names': list(source.class_names), 'dataset': config.dataset})
  clock.lap('setup')

  # -- compiled steps --------------------------------------------------------------------
  if run.resident is not None:
    say('input: the training split on the devices, each batch gathered in the step')
  batches = run.batches(source, start_step)
  first = next(batches)
  clock.lap('input')
  run.compile(first, source, train=start_step < steps, init=state is None)
  clock.lap('compile')
  if state is None:
    state = run.init(jax.device_put(run.seeds, shardings['seed']))
    if config.init_from:
      state = _init_from(config.init_from, state, run, mesh)
    jax.block_until_ready(state)
  clock.lap('init')
  batches = itertools.chain([first], batches)
  train_step = run.train_step
  run_eval = lambda state: step_lib.evaluate(run.eval_step, run.weights(state),
                                             source.eval_batches(), mesh)

  # -- loop -----------------------------------------------------------------------------
  writer = run_log.MetricWriter(workdir, start_step)
  stall_warned = False
  last_metrics: dict[str, Any] = {}
  img_s_history = []
  t_window, step_window = time.time(), start_step
  preempted, stop_signal = threading.Event(), []

  def stop(signum):  # SIGTERM (preemption) or Ctrl-C: save at this step, then exit
    stop_signal.append(signum)
    preempted.set()

  with (jax.set_mesh(mesh), on_sigterm(lambda: stop(signal.SIGTERM)),
        on_sigterm(lambda: stop(signal.SIGINT), signal.SIGINT)):
    run_ahead = parallel.RunAhead()
    for step in range(start_step + 1, steps + 1):
      state, metrics = train_step(state, next(batches))
      window.add(metrics)
      run_ahead.add(metrics)

      if step % config.log_every == 0 or step == steps:
        # The only transfer to the host: once per log_every steps.
        means = window.means()
        now = time.time()
        img_s = (step - step_window) * config.batch_size / (now - t_window)
        if step_window > start_step:  # the first window includes the programs' first runs
          img_s_history.append(img_s)
        losses = means['loss']  # one per seed
        loss = float(np.mean(losses))
        if not np.isfinite(losses).all():
          raise UserError(f'loss is {loss} at step {step} (lr={learning_rate(step):.3g}): '
                          'lower --config.lr or set --config.grad_clip')
        last_metrics = {'loss': loss, 'train_top1': float(np.mean(means['top1'])),
                        'lr': learning_rate(step), 'img_s': img_s}
        if config.num_seeds > 1:
          last_metrics['loss_per_seed'] = losses.tolist()
        stall_warned = _warn_if_stalled(loss, spec.num_classes, step, steps, stall_warned)
        eta = (steps - step) * (now - t_window) / (step - step_window)
        say(f'step {step}/{steps} loss {loss:.4f} train_top1 {last_metrics["train_top1"]:.3f} '
            f'lr {last_metrics["lr"]:.3g} {img_s:,.0f} img/s '
            f'ETA {run_log.format_duration(eta)}')
        writer.write(step, last_metrics)
        window = run_log.LogWindow()
        t_window, step_window = time.time(), step

      if config.eval_every and step % config.eval_every == 0 and step != steps:
        clock.lap('train')
        metrics_eval = run_eval(state)
        clock.lap('eval')
        say(f'  eval at step {step}: top1 {metrics_eval["top1"]:.4f} '
            f'top5 {metrics_eval["top5"]:.4f}')
        writer.write(step, metrics_eval)
        t_window = time.time()  # evaluation time is not training throughput

      if step % config.checkpoint_every == 0 or step == steps or preempted.is_set():
        # Keep the partial log window so that a resumed run logs identically.
        clock.lap('train')
        checkpointer.save(step, run.saved(state),
                          {'step': step, 'seed': config.seed, 'window': window.to_dict()})
        clock.lap('checkpoint')
        if preempted.is_set():
          checkpointer.close()
          writer.close()
          raise Preempted(step, stop_signal[0])

    # -- evaluation and result ------------------------------------------------------------
    # The final evaluation runs while the last checkpoint is written.
    clock.lap('train')
    final = run_eval(state)
    clock.lap('eval')
    checkpointer.wait()
    clock.lap('checkpoint')
  checkpointer.close()
  say(f'eval on {config.eval_split} ({final["eval_examples"]:,} images): '
      f'top1 {final["top1"]:.4f} top5 {final["top5"]:.4f}')
  writer.write(steps, final)
  writer.close()

  per_seed = final.pop('per_seed', None)
  train_img_s = float(np.median(img_s_history)) if img_s_history else None
  wall_s = time.time() - t_start
  result = {
      'config': config.to_dict(), 'spec': spec.to_dict(), **cost,
      'steps': steps, 'final_train_loss': last_metrics.get('loss'), **final,
      'train_img_s': train_img_s, 'data_on_device': run.resident is not None,
      'seed_axis': run.seed_axis, 'wall_s': wall_s,
      'timing': run_log.timing(clock, wall_s, (steps - start_step) * config.batch_size,
                               train_img_s),
      **environment()}
  if per_seed is not None:  # several seeds: the means above, each seed here
    result['per_seed'] = [
        {'seed': config.seed + i, 'final_train_loss': last_metrics['loss_per_seed'][i],
         **{k: v[i] for k, v in per_seed.items()}} for i in range(config.num_seeds)]
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, 'result.json'), result)  # all of it or nothing
  run_lock.close()
  return result


@dataclasses.dataclass
class Programs:
  """What a config compiles to on a mesh, before any workdir is touched: the network,
  its optimizer, the state's layout and shardings, and the jitted programs.
  The trainer runs them; a sweep's compile-ahead process (squeezejax.compile_ahead)
  only compiles them, into the sweep's compilation cache."""
  mesh: jax.sharding.Mesh
  spec: Any
  steps: int
  splits: int  # sub-batches a step's gradients are computed over
  seed_axis: str | None  # how one step runs several seeds ('vmap' | 'map')
  schedule: Callable[[Any], Any]
  tx: Any
  seeds: np.ndarray
  init_state: Callable[..., dict[str, Any]]  # (seed[, tx, flat]) -> the state
  with_shardings: Callable[[Any], tuple[Any, Any]]  # abstract -> (shardings, sharded abstract)
  shardings: dict[str, Any]
  abstract_state: dict[str, Any]
  saved_abstract: dict[str, Any]  # the state as checkpoints hold it (`saved`)
  resident: Any  # data.DeviceBatches: the training split on the devices, or None
  init: Any
  train_step: Any
  eval_step: Any
  # Where the state holds the parameters as one vector (step.flat_optimizer), jitted:
  # that vector -> the parameter tree (unravel), and back (ravel); else None.
  unravel: Any
  ravel: Any

  def params_tree(self, params):
    return params if self.unravel is None else self.unravel(params)

  def weights(self, state):
    """The eval step's input: the parameters as their tree and the running averages."""
    return model_lib.merge_weights(self.params_tree(state['params']), state['batch_stats'])

  def saved(self, state) -> dict[str, Any]:
    """The state as checkpoints hold it: the parameters as their tree, whatever the
    layout, and without the step and seeds (NOT_SAVED)."""
    return {**{k: v for k, v in state.items() if k not in NOT_SAVED},
            'params': self.params_tree(state['params'])}

  def from_saved(self, items: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `saved`, but for the step and seeds."""
    return items if self.ravel is None else {**items, 'params': self.ravel(items['params'])}

  def batches(self, source, start_step: int) -> Iterator[Any]:
    """The train step's inputs from `start_step` on, as global arrays."""
    if self.resident is not None:
      return self.resident(start_step)
    return (parallel.global_batch(self.mesh, b)
            for b in data.prefetch(source.train_batches(start_step)))

  def lower(self, first, source, train: bool = True, init: bool = True) -> list[Any]:
    """The programs a run needs (eval; train unless finished; unravel for the flat
    layout; init unless resumed), lowered for the first train batch `first` and the
    source's eval batches."""
    saved = self.saved_abstract
    with jax.set_mesh(self.mesh):
      programs = [self.eval_step.lower(
          model_lib.merge_weights(saved['params'], saved['batch_stats']),
          parallel.global_batch(self.mesh, next(source.eval_batches())))]
      if train:
        programs.append(self.train_step.lower(self.abstract_state, first))
      if self.unravel is not None:  # for evaluating and saving
        programs.append(self.unravel.lower(self.abstract_state['params']))
    if init:  # called outside the mesh context, so lowered outside it
      programs.append(self.init.lower(self.abstract_state['seed']))
    return programs

  def compile(self, first, source, train: bool = True, init: bool = True) -> None:
    """Compiles them ahead of the loop, so that result.json's timing tells compiling
    from training; each jit's cache keeps its executable, so the calls that follow
    compile nothing. One after another: compiled in threads side by side they took
    longer in all, since XLA:CPU's compiler already keeps the cores busy
    (docs/performance.md)."""
    for lowered in self.lower(first, source, train, init):
      lowered.compile()


def build(config: ml_collections.ConfigDict, mesh, source) -> Programs:
  """The run's `Programs` from its config, mesh and input (nothing compiled yet)."""
  prep = source.preprocessing
  init_spec = checkpoint_lib.read_model_json(config.init_from)[0] if config.init_from else None
  spec = configs.spec_from_config(config, num_classes=source.num_classes,
                                  in_channels=source.channels, base=init_spec)
  spec.check_image_size(prep.image_size)
  steps = configs.total_steps(config, source.num_train)
  splits = step_lib.batch_splits(config, mesh)
  seed_axis = step_lib.resolve_seed_axis(config.seed_axis) if config.num_seeds > 1 else None
  # The network's construction is traced twice, each trace a share of a point's set-up:
  # here for its graph and parameter shapes, then for the state (reused to lower init).
  abstract_net = nnx.eval_shape(lambda: model_lib.create(
      spec, dtype=step_lib.DTYPES[config.dtype], formulation=config.layers))
  graphdef, _ = nnx.split(abstract_net)
  abstract_params = nnx.to_pure_dict(nnx.state(abstract_net, nnx.Param))
  schedule = step_lib.make_schedule(config, steps)
  tx = step_lib.make_optimizer(config, schedule, abstract_params, spec.head)
  flat = step_lib.flat_optimizer(config)
  unravel_one = step_lib.unraveler(abstract_params) if flat else None
  seeded = (lambda f: f) if config.num_seeds == 1 else jax.vmap

  # The state, created directly in its shardings.
  def init_one(key, tx=tx, flat=flat):
    params, batch_stats = model_lib.split_weights(model_lib.create(spec, seed=key))
    if flat:
      params = step_lib.ravel(params)
    return params, batch_stats, tx.init(params)

  def init_state(seed, tx=tx, flat=flat):  # the seed an argument: a point's seeds share it
    if config.num_seeds == 1:
      params, batch_stats, opt_state = init_one(jax.random.key(seed), tx, flat)
    else:
      params, batch_stats, opt_state = jax.vmap(lambda k: init_one(k, tx, flat))(
          jax.vmap(jax.random.key)(seed))
    return {'params': params, 'batch_stats': batch_stats, 'opt_state': opt_state,
            'step': jnp.int32(0), 'seed': seed}

  def with_shardings(abstract):
    shardings = parallel.state_shardings(mesh, abstract, config.fsdp)
    shardings['step'] = shardings['seed'] = parallel.replicated(mesh)
    return shardings, jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)

  seeds = step_lib.seeds(config)
  # Traced with the type `Programs.lower` gives the init, so that it lowers this trace.
  shardings, abstract_state = with_shardings(jax.eval_shape(init_state, jax.ShapeDtypeStruct(
      np.shape(seeds), seeds.dtype, sharding=parallel.replicated(mesh))))
  saved_shardings, saved_abstract = shardings, abstract_state
  unravel = ravel = None
  if flat:  # each evaluation or save runs unravel once, a resume ravel
    saved_shardings, saved_abstract = with_shardings({**abstract_state, 'params': jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(seeds) + x.shape, x.dtype), abstract_params)})
    unravel = jax.jit(seeded(unravel_one), out_shardings=saved_shardings['params'],
                      compiler_options=parallel.run_once_compiler_options())
    ravel = jax.jit(seeded(step_lib.ravel), out_shardings=shardings['params'],
                    compiler_options=parallel.run_once_compiler_options())

  batch_sharding = parallel.batch_sharding(mesh)
  train_fn = step_lib.make_train_step(graphdef, tx, config, prep, splits, unravel_one)
  resident = data.on_device(config, source, mesh)  # the split on the devices, or None
  if resident is not None:
    train_fn = resident.wrap(train_fn)  # gathers the batch inside the step
  train_step = parallel.jit(
      train_fn, config.cpu_convolutions,
      in_shardings=(shardings, batch_sharding if resident is None else None),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
  eval_step = parallel.jit(step_lib.make_eval_step(graphdef, prep, config.num_seeds, seed_axis),
                           config.cpu_convolutions,
                           in_shardings=(model_lib.merge_weights(saved_shardings['params'],
                                                                 saved_shardings['batch_stats']),
                                         batch_sharding),
                           out_shardings=parallel.replicated(mesh))
  init = jax.jit(init_state, in_shardings=shardings['seed'], out_shardings=shardings,
                 compiler_options=parallel.run_once_compiler_options())
  return Programs(mesh, spec, steps, splits, seed_axis,
                  schedule, tx, seeds, init_state, with_shardings, shardings, abstract_state,
                  saved_abstract, resident, init, train_step, eval_step, unravel, ravel)


def _other_optimizer_layouts(config, run: Programs):
  """[(abstract saved state, convert)] for the optimizer's layout under the other
  fsdp setting (flat or per parameter, step.flat_optimizer), so that a checkpoint
  written with it, or before the flat layout, resumes; none where it is the same."""
  flat = step_lib.flat_optimizer(config, fsdp=not config.fsdp)
  if flat == step_lib.flat_optimizer(config):
    return []
  other_tx = step_lib.make_optimizer(config, run.schedule, model_lib.abstract_params(run.spec),
                                     run.spec.head, flat=flat)
  _, other = run.with_shardings(jax.eval_shape(lambda s: run.init_state(s, other_tx, False),
                                               run.seeds))
  ours = run.abstract_state['opt_state']
  per_seed = ours if config.num_seeds == 1 else jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), ours)
  convert = lambda opt_state, params: step_lib.other_layout(opt_state, params, per_seed)
  if config.num_seeds > 1:
    convert = jax.vmap(convert)
  to_ours = jax.jit(convert, out_shardings=jax.tree.map(lambda x: x.sharding, ours))
  return [({k: v for k, v in other.items() if k not in NOT_SAVED},
           lambda items: {**items, 'opt_state': to_ours(items['opt_state'], items['params'])})]


def _init_from(directory, state, run: Programs, mesh):
  """Loads pretrained parameters; conv10 is kept fresh when its shape differs."""
  loaded_spec, weights, _ = checkpoint_lib.load_model(directory, parallel.replicated(mesh))
  loaded = dict(zip(('params', 'batch_stats'), model_lib.split_weights(weights, loaded_spec)))
  shardings = jax.tree.map(lambda x: x.sharding, run.saved_abstract)
  saved = run.saved(state)
  new = {k: dict(saved[k]) for k in loaded}
  for kind, trees in new.items():
    for name in trees:
      same = jax.tree.map(lambda a, b: a.shape == b.shape, loaded[kind][name], trees[name])
      if all(jax.tree.leaves(same)):
        trees[name] = jax.tree.map(jax.device_put, loaded[kind][name], shardings[kind][name])
      elif kind == 'params':
        say(f'init_from: {name} shapes differ ({directory}); keeping it freshly initialised')
  new = run.from_saved(new)
  opt_state = jax.jit(run.tx.init, out_shardings=run.shardings['opt_state'])(new['params'])
  return {**new, 'opt_state': opt_state, 'step': state['step'], 'seed': state['seed']}


def _check_same_run(workdir: str, spec, dataset: str) -> None:
  """A workdir holds one run: resuming it with another network or dataset is refused
  before anything in it is touched."""
  if not os.path.exists(os.path.join(workdir, checkpoint_lib.MODEL_JSON)):
    return
  old_spec, meta = checkpoint_lib.read_model_json(workdir)
  old, new = old_spec.to_dict(), spec.to_dict()
  changes = [f'{k} {old[k]!r} -> {new[k]!r}' for k in new if old.get(k) != new[k]]
  if meta.get('dataset', dataset) != dataset:
    changes.append(f'dataset {meta["dataset"]!r} -> {dataset!r}')
  if changes:
    raise UserError(f'workdir={workdir!r} holds a run of another model ({"; ".join(changes)}): '
                    'use a new --workdir, or delete this one to start fresh')


def _warn_if_stalled(loss, num_classes, step, steps, warned) -> bool:
  chance = math.log(num_classes)
  if not warned and step >= max(100, steps // 10) and abs(loss - chance) < 0.02 * chance:
    logging.warning(
        'loss %.4f has stayed at ln(num_classes) = %.4f by step %d: the classic stalled '
        'SqueezeNet. Check the learning rate, the batch size, conv10 init N(0, 0.01), and '
        'the ReLU after conv10 (--config.spec.conv10_relu=False lets dead classes recover)',
        loss, chance, step)
    return True
  return warned


def _check_workdir(workdir: str) -> None:
  if not workdir:
    raise UserError('--workdir is required')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise UserError(f'workdir={workdir!r} is not writable: {e.strerror}') from None


def environment() -> dict[str, Any]:
  """Versions, devices and the git commit, for result.json."""
  import flax, optax  # pylint: disable=g-import-not-at-top,g-multiple-import
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__), timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    commit = None
  return {
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   'flax': flax.__version__, 'optax': optax.__version__,
                   'orbax_checkpoint': checkpoint_lib.VERSION},
      'device_kind': jax.devices()[0].device_kind, 'device_count': jax.device_count(),
      'process_count': jax.process_count(), 'git_commit': commit,
  }


# -- command line -------------------------------------------------------------------------


def _parse(prog: str, argv: list[str]):
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='path/to/config.py[:preset]')
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args(argv)
  return args, configs.load(args.config, overrides)


def main(argv: list[str]) -> int:
  args, config = _parse('squeezejax train', argv)
  try:
    train_and_evaluate(config, args.workdir)
  except Preempted as e:
    print(f'squeezejax train: {e}', file=sys.stderr)
    return e.exit_status
  return 0


def eval_main(argv: list[str]) -> int:
  """`squeezejax eval`: re-evaluate the newest checkpoint of a training workdir (read-only),
  or with --model=FILE an exported file in its own runtime (squeezejax.edge)."""
  if any(a == '--model' or a.startswith('--model=') for a in argv):
    from squeezejax import edge  # pylint: disable=g-import-not-at-top
    print(json.dumps(edge.eval_main(argv)))
    return 0
  args, config = _parse('squeezejax eval', argv)
  model_keys = [k for k in configs.split_overrides(argv)[1]
                if k == 'model' or k.startswith('spec.')]
  if model_keys:  # the network is the model directory's: an override would be ignored
    raise UserError(f'--config.{model_keys[0]}: eval uses the network in {args.workdir}/'
                    f'{checkpoint_lib.MODEL_JSON}; expected no --config.model or --config.spec.*')
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_batch(mesh, config.eval_batch_size, 'eval_batch_size')
  # Restored replicated over the mesh the eval step runs on (any device count).
  spec, params, _ = checkpoint_lib.load_model(args.workdir, parallel.replicated(mesh))
  source = data.make_input(config)
  graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: model_lib.create(spec, formulation=config.layers)))
  eval_step = parallel.jit(step_lib.make_eval_step(graphdef, source.preprocessing),
                           config.cpu_convolutions)
  with jax.set_mesh(mesh):
    metrics = step_lib.evaluate(eval_step, params, source.eval_batches(), mesh)
  print(json.dumps(metrics))
  return 0
