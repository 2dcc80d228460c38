"""Checkpoints and model directories: the only module that talks to Orbax.

A model directory (a training workdir, or what `squeezejax convert` writes) holds

    model.json            the SqueezeNetSpec and `meta` (preprocessing, class names)
    checkpoints/<step>/   Orbax items: params, opt_state (training only), meta (json)

Restores go onto an abstract target (jax.ShapeDtypeStruct with shardings), so a
checkpoint written on one mesh restores onto any other.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

MODEL_JSON = 'model.json'


class CheckpointError(UserError):
  pass


class Checkpointer:
  """Async, bounded checkpoints of (params, opt_state, meta) under `directory`."""

  def __init__(self, directory: str, *, keep: int = 3):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, create=True))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, params, opt_state, meta: dict[str, Any]) -> None:
    """Starts an asynchronous save; returns once the arrays are copied off device."""
    items = dict(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
    if opt_state is not None:
      items['opt_state'] = ocp.args.StandardSave(opt_state)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore_latest(self, abstract_params, abstract_opt_state=None):
    """(step, params, opt_state, meta) of the newest readable checkpoint, or None.

    A damaged newest checkpoint (e.g. a kill mid-write on a filesystem without
    atomic renames) falls back to the one before it, with a warning.
    """
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        restored = (step, *self.restore(step, abstract_params, abstract_opt_state))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('checkpoint %d in %s is unreadable (%s: %s); trying the '
                        'previous one', step, self.directory, type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else '')
        damaged.append(step)
        continue
      for bad in damaged:  # so that training can write these steps again
        self.manager.delete(bad)
      return restored
    return None

  def restore(self, step: int, abstract_params, abstract_opt_state=None):
    items = dict(params=ocp.args.StandardRestore(abstract_params),
                 meta=ocp.args.JsonRestore())
    if abstract_opt_state is not None:
      items['opt_state'] = ocp.args.StandardRestore(abstract_opt_state)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out.params, out.get('opt_state'), out.meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# -- model directories --------------------------------------------------------------


def write_model_json(directory: str, spec: spec_lib.SqueezeNetSpec, meta: dict[str, Any]) -> None:
  """Atomically writes model.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, MODEL_JSON)
  with open(path + '.tmp', 'w') as f:
    json.dump({'spec': spec.to_dict(), 'meta': meta}, f, indent=1)
  os.replace(path + '.tmp', path)


def read_model_json(directory: str) -> tuple[spec_lib.SqueezeNetSpec, dict[str, Any]]:
  path = os.path.join(directory, MODEL_JSON)
  if not os.path.isfile(path):
    raise CheckpointError(f'{directory!r} is not a model directory: no {MODEL_JSON} '
                          '(expected a workdir of `squeezejax train` or `squeezejax convert`)')
  with open(path) as f:
    data = json.load(f)
  return spec_lib.SqueezeNetSpec(**data['spec']), data.get('meta', {})


def save_model(directory: str, spec: spec_lib.SqueezeNetSpec, params, meta: dict[str, Any]) -> None:
  """Writes a model directory holding parameters only (e.g. converted weights)."""
  if os.path.exists(os.path.join(directory, 'checkpoints')):
    raise CheckpointError(f'{directory!r} already holds checkpoints: choose a new directory')
  write_model_json(directory, spec, meta)
  ckpt = Checkpointer(os.path.join(directory, 'checkpoints'), keep=1)
  ckpt.save(0, params, None, {'step': 0})
  ckpt.close()


def abstract_model_params(spec: spec_lib.SqueezeNetSpec):
  """The parameter pytree's shapes and dtypes, built without allocating it."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from squeezejax import model as model_lib  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(
      lambda: nnx.to_pure_dict(nnx.state(model_lib.create(spec), nnx.Param)))


def load_model(directory: str, abstract_params=None):
  """(spec, params, meta) from a model directory's newest readable checkpoint.

  `abstract_params` (ShapeDtypeStructs, optionally with shardings) is the restore
  target; by default it comes from the spec, on the default device.
  """
  spec, meta = read_model_json(directory)
  if abstract_params is None:
    abstract_params = abstract_model_params(spec)
  ckpt_dir = os.path.join(directory, 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    raise CheckpointError(f'{directory!r} has no checkpoints/ folder')
  ckpt = Checkpointer(ckpt_dir)
  restored = ckpt.restore_latest(abstract_params)
  ckpt.close()
  if restored is None:
    raise CheckpointError(f'{directory!r} has no readable checkpoint')
  _, params, _, _ = restored
  return spec, params, meta
