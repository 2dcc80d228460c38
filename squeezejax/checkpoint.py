"""Checkpoints and model directories: the only module that talks to Orbax.

A model directory (a training workdir, or what `squeezejax convert` writes) holds

    model.json            the spec (any family) and `meta` (preprocessing, class names)
    checkpoints/<step>/   Orbax items: params, batch_stats (BatchNorm networks only),
                          opt_state (training only), meta (json)

or, compressed (`squeezejax compress`, or `convert` of a Deep Compression file),
model.json and model.net, which `load_model` decodes (squeezejax.compression).

The trainer writes through a `Checkpointer`. Everything else reads through
`load_model`, which opens Orbax read-only: reading never creates, deletes or
rewrites a file, even when the newest checkpoint is damaged or being written.
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

from squeezejax import families, files
from squeezejax import model as model_lib
from squeezejax.errors import UserError

MODEL_JSON = 'model.json'
CHECKPOINTS = 'checkpoints'
VERSION = ocp.__version__

# Replicated arrays are written whole by their first replica. Orbax's default
# (replica-parallel: each replica writes a slice) slices every array on the device,
# a jitted slice per parameter shape: tens of compilations per new network, on the
# save that ends a short sweep point (docs/performance.md).
_absl_level = logging.getLogger('absl').level
logging.getLogger('absl').setLevel(logging.ERROR)  # the override is meant: no warning
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
logging.getLogger('absl').setLevel(_absl_level)


def _manager(directory: str, *, keep: int = 1, read_only: bool = False):
  if read_only:
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0, max_to_keep=None,
        enable_async_checkpointing=False)
  else:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # Orbax warns that a read-only manager is read-only
  try:
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)
  finally:
    absl_logger.setLevel(level)


def _restore(manager, step: int, abstract: dict[str, Any]):
  """({item: tree} for each item of `abstract`, meta); an item without arrays (the
  batch_stats of a network without BatchNorm) is not stored and comes back empty."""
  stored = {k: v for k, v in abstract.items() if jax.tree.leaves(v)}
  items = {k: ocp.args.StandardRestore(v) for k, v in stored.items()}
  out = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **items))
  return {k: out[k] if k in stored else v for k, v in abstract.items()}, out.meta


# Orbax's words for a readable checkpoint whose trees differ from the restore target.
_OTHER_STATE = 'tree structures do not match'


class _Damaged(Exception):
  """Orbax could not read a checkpoint (its cause attached)."""


def _newest_readable(manager, abstract: dict[str, Any], other_layouts=None):
  """((step, items, meta) or None, [unreadable newer steps]). `other_layouts()`:
  other (abstract, convert) the items may have been saved in; convert brings them
  to `abstract`'s."""
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return (step, *_restore_any(manager, step, abstract, other_layouts)), damaged
    except _Damaged as damage:  # any damage; the older one may do
      e = damage.__cause__
      first = str(e).splitlines()[0][:200] if str(e) else ''
      logging.warning('checkpoint %d in %s is unreadable (%s: %s); trying the previous one',
                      step, manager.directory, type(e).__name__, first)
      damaged.append(step)
  return None, damaged


def _restore_any(manager, step: int, abstract, other_layouts):
  """_restore onto `abstract`, else onto the first of `other_layouts()` that the
  checkpoint's trees match. An intact checkpoint that matches none was written by
  another configuration: not damage, so it is neither deleted nor passed over.
  Only Orbax's own failures count as damage: an error in a conversion is a bug."""
  for target, convert in [(abstract, None), *(other_layouts() if other_layouts else ())]:
    try:
      items, meta = _restore(manager, step, target)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, ValueError) and _OTHER_STATE in str(e):
        continue
      raise _Damaged() from e
    return (convert(items) if convert else items), meta
  raise UserError(
      f'checkpoint {step} in {manager.directory} holds a different state than this run '
      'builds: resume with the settings that wrote it (optimizer, grad_clip, '
      'freeze_backbone, compressed) or train in a new workdir')


class Checkpointer:
  """The trainer's asynchronous, bounded checkpoints of named pytrees (params,
  batch_stats, opt_state) and a json `meta`."""

  def __init__(self, directory: str, *, keep: int = 3):
    self.manager = _manager(directory, keep=keep)

  def save(self, step: int, items: dict[str, Any], meta: dict[str, Any]) -> None:
    """Starts an asynchronous save; returns once the arrays are copied off device.
    Items without arrays (None, or {}: no BatchNorm) are not stored."""
    args = {k: ocp.args.StandardSave(v) for k, v in items.items()
            if v is not None and jax.tree.leaves(v)}
    self.manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args),
                      force=True)

  def restore_latest(self, abstract: dict[str, Any], other_layouts=None):
    """(step, {item: tree}, meta) of the newest readable checkpoint, or None.
    `abstract` names the items and their targets (ShapeDtypeStructs with shardings);
    `other_layouts()`, other (abstract, convert) they may have been saved in.

    A damaged newer checkpoint (a kill mid-write on a filesystem without atomic
    renames) is deleted, so that the resumed run can write its step again.
    """
    restored, damaged = _newest_readable(self.manager, abstract, other_layouts)
    for step in damaged:
      self.manager.delete(step)
    return restored

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# -- model directories --------------------------------------------------------------


def write_model_json(directory: str, spec, meta: dict[str, Any]) -> None:
  """Atomically writes model.json (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(directory, exist_ok=True)
  files.write_json(os.path.join(directory, MODEL_JSON), {'spec': spec.to_dict(), 'meta': meta})


def read_model_json(directory: str) -> tuple[Any, dict[str, Any]]:
  path = os.path.join(directory, MODEL_JSON)
  if not os.path.isfile(path):
    raise UserError(f'{directory!r} is not a model directory: no {MODEL_JSON} '
                    '(expected a workdir of `squeezejax train` or `squeezejax convert`)')
  try:
    with open(path) as f:
      data = json.load(f)
    return families.spec_from_dict(data['spec']), data.get('meta', {})
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f'{path!r} is not a readable model.json ({type(e).__name__}: {e})') from None


def save_model(directory: str, spec, weights, meta: dict[str, Any]) -> None:
  """Writes a model directory holding weights only (e.g. converted ones); `weights`
  is `model.weights` (parameters and any BatchNorm statistics)."""
  if os.path.exists(os.path.join(directory, CHECKPOINTS)):
    raise UserError(f'{directory!r} already holds checkpoints: choose a new directory')
  params, batch_stats = model_lib.split_weights(weights, spec)
  write_model_json(directory, spec, meta)
  ckpt = Checkpointer(os.path.join(directory, CHECKPOINTS), keep=1)
  ckpt.save(0, {'params': params, 'batch_stats': batch_stats}, {'step': 0})
  ckpt.close()


def saved_steps(directory: str) -> list[int]:
  """The steps saved in a model directory, read-only."""
  manager = _manager(os.path.join(directory, CHECKPOINTS), read_only=True)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def load_model(directory: str, sharding=None):
  """(spec, weights, meta) from a model directory's newest readable checkpoint; read-only.

  `weights` is one pure dict of the parameters and any BatchNorm statistics
  (`model.from_params` takes it), restored with `sharding` (by default this
  process's first device, not the sharding it was saved with).
  """
  spec, meta = read_model_json(directory)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = lambda tree: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
  abstract = {'params': target(model_lib.abstract_params(spec)),
              'batch_stats': target(model_lib.abstract_batch_stats(spec))}
  if meta.get('compression'):  # a Deep Compression file (squeezejax compress / convert)
    from squeezejax.compression import weights  # pylint: disable=g-import-not-at-top
    params = weights.load(directory, spec, meta)
    return spec, jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), params,
                              abstract['params']), meta
  ckpt_dir = os.path.join(directory, CHECKPOINTS)
  if not os.path.isdir(ckpt_dir):
    raise UserError(f'{directory!r} has no {CHECKPOINTS}/ folder')
  manager = _manager(ckpt_dir, read_only=True)
  try:
    restored, _ = _newest_readable(manager, abstract)
  finally:
    manager.close()
  if restored is None:
    raise UserError(f'{directory!r} has no readable checkpoint')
  items = restored[1]
  return spec, model_lib.merge_weights(items['params'], items['batch_stats']), meta
