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
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from squeezejax import checkpoint as checkpoint_lib
from squeezejax import cli, configs, data, files, parallel, programs, run_log
from squeezejax import step as step_lib
from squeezejax import model as model_lib
from squeezejax.errors import Preempted, UserError, on_sigterm

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
  run = programs.build(config, mesh, source)
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
      run.saved_abstract, lambda: programs.other_optimizer_layouts(config, run))
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


def _init_from(directory, state, run: programs.Programs, mesh):
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
