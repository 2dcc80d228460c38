"""What a config compiles to on a mesh (`build` -> `Programs`): the network, its
optimizer, the state's layout and shardings, and the jitted init, train, eval and
unravel programs. The trainer (squeezejax.train) runs them; a sweep's compile-ahead
process (squeezejax.compile_ahead) only compiles them, into the sweep's compilation cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from squeezejax import checkpoint as checkpoint_lib
from squeezejax import configs, data, parallel, step as step_lib
from squeezejax import model as model_lib

# The state's parts that checkpoints leave out: the step is the checkpoint's own, the
# seeds come from the config.
NOT_SAVED = ('step', 'seed')


def _saved_parts(state: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in state.items() if k not in NOT_SAVED}


@dataclasses.dataclass
class Programs:
  """What a config compiles to on a mesh (the module's docstring), before any workdir
  is touched."""
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
  saved_abstract: dict[str, Any]  # the state as checkpoints hold it (`saved`), abstract
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
    return {**_saved_parts(state), 'params': self.params_tree(state['params'])}

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
  saved_abstract = _saved_parts(saved_abstract)

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


def other_optimizer_layouts(config, run: Programs):
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
  return [(_saved_parts(other),
           lambda items: {**items, 'opt_state': to_ours(items['opt_state'], items['params'])})]
