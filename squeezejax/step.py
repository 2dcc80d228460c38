"""The update step and the evaluation step: pure functions of pytrees, for `jax.jit`.

  train_step(state, batch) -> (state, metric sums)
      state = {params, batch_stats, opt_state, step, seed}; params is the parameter
      tree, or one vector of it (`flat_optimizer`); batch_stats holds the
      BatchNorm running averages ({} for a network without BatchNorm), updated by each
      step; seed (`seeds`) is an argument rather than a constant of the program, so
      runs that differ only in their seed share one compiled step
  eval_step(weights, batch) -> sums of (loss, top-1, top-5, count) over unmasked rows
      weights = model.merge_weights(params, batch_stats): the running averages

Both take uint8 images (augmented / preprocessed on the device here) or float
images (already prepared by a tf.data stream). Randomness is
`fold_in(seed, step)`, so a step's result depends only on (state, batch).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from squeezejax import configs, onednn, parallel
from squeezejax import model as model_lib
from squeezejax.data import Preprocessing
from squeezejax.errors import UserError

DTYPES = {name: jnp.dtype(name) for name in configs.DTYPES}


# -- optimizer -------------------------------------------------------------------------


def make_schedule(config, steps: int) -> optax.Schedule:
  warmup = min(config.warmup_steps, steps - 1)
  decay_steps = max(1, steps - warmup)
  if config.schedule == 'cosine':
    main = optax.cosine_decay_schedule(config.lr, decay_steps)
  elif config.schedule == 'linear':  # the paper: linear decay to 0 ("poly", power 1)
    main = optax.linear_schedule(config.lr, 0.0, decay_steps)
  else:
    main = optax.constant_schedule(config.lr)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), main], [warmup])


def flat_optimizer(config, fsdp: bool | None = None) -> bool:
  """Whether the trainer's state holds every parameter in one vector, and
  `make_optimizer`'s state one vector per moment, rather than per parameter, with
  config.fsdp or `fsdp`. Per parameter, XLA:CPU compiles each stage of the update as a
  kernel of its own: a large share of a new network's compile (docs/performance.md).
  fsdp keeps the state sharded as the parameters are; freeze_backbone and compressed
  need it per parameter. Checkpoints hold the parameters per parameter either way."""
  fsdp = config.fsdp if fsdp is None else fsdp
  return not (fsdp or config.freeze_backbone or config.compressed)


def make_optimizer(config, schedule, abstract_params, head: str = 'conv10',
                   flat: bool | None = None) -> optax.GradientTransformation:
  """SGD or AdamW; with config.freeze_backbone only `head` (the spec's classifier)
  trains. `flat`: the state's layout, `flat_optimizer(config)` by default."""
  parts = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []
  if config.optimizer == 'sgd':
    # Caffe's weight_decay is L2 added to the gradient, biases included.
    parts += [optax.add_decayed_weights(config.weight_decay),
              optax.sgd(schedule, momentum=config.momentum)]
  else:
    parts += [optax.adamw(schedule, b1=config.momentum, weight_decay=config.weight_decay)]
  tx = optax.chain(*parts)
  if flat_optimizer(config) if flat is None else flat:
    tx = optax.flatten(tx)
  if config.freeze_backbone:
    labels = {k: jax.tree.map(lambda _, k=k: 'train' if k == head else 'frozen', v)
              for k, v in abstract_params.items()}
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  if config.compressed:  # masks (and clusters) live in the optimizer state
    from squeezejax.compression import prune, share  # pylint: disable=g-import-not-at-top
    first = [share.shared_gradients()] if config.compressed == 'shared' else []
    tx = optax.chain(*first, tx, prune.keep_zeros())
  return tx


def ravel(tree) -> jax.Array:
  """The leaves of a parameter tree as one vector, in tree order (optax.flatten's)."""
  return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


def unraveler(abstract_params) -> Callable[[jax.Array], Any]:
  """The inverse of `ravel` for trees of `abstract_params`' shapes and dtypes."""
  treedef, leaves = jax.tree.structure(abstract_params), jax.tree.leaves(abstract_params)
  sizes = [x.size for x in leaves]

  def unravel(vector):
    return jax.tree.unflatten(treedef, [part.reshape(x.shape).astype(x.dtype) for part, x
                                        in zip(onednn.split(vector, sizes), leaves)])
  return unravel


def other_layout(opt_state, abstract_params, target):
  """`opt_state` of one layout (flat or per parameter, see `flat_optimizer`) in the
  other, the layout of `target` (an abstract state): for a checkpoint written with
  another fsdp setting, or before the flat layout."""
  treedef = jax.tree.structure(abstract_params)
  is_params = lambda x: jax.tree.structure(x) == treedef
  unravel = unraveler(abstract_params)
  if any(map(is_params, jax.tree.leaves(target, is_leaf=is_params))):  # to per parameter
    return jax.tree.map(lambda t, x: unravel(x) if is_params(t) else x, target, opt_state,
                        is_leaf=is_params)
  return jax.tree.map(lambda x: ravel(x) if is_params(x) else x, opt_state,  # to flat
                      is_leaf=is_params)


def batch_splits(config, mesh) -> int:
  """config.batch_splits, checked, with 0 resolved: 4 where one CPU device has the
  whole machine (and 4 divides its micro-batch), else 1. With a device per core
  (parallel.configure_host) the devices already keep the cores busy."""
  per_device = config.batch_size // config.accum_steps // mesh.size
  if config.batch_splits:
    if config.batch_splits < 0 or per_device % config.batch_splits:
      raise UserError(
          f'config.batch_splits={config.batch_splits} is not allowed: expected 0 (automatic) '
          f'or a divisor of the {per_device} images per device and micro-batch')
    return config.batch_splits
  single_cpu = jax.default_backend() == 'cpu' and mesh.size == 1
  return 4 if single_cpu and per_device % 4 == 0 else 1


def resolve_seed_axis(seed_axis: str) -> str:
  """How one step runs several seeds (config.seed_axis), 'auto' resolved. 'vmap'
  batches the seeds, which turns every convolution into a grouped one (a group per
  seed): GPUs and TPUs run those well, XLA:CPU slowly. 'map' runs each seed's own
  ordinary convolutions, one seed after another in the same step."""
  if seed_axis != 'auto':
    return seed_axis
  return 'map' if jax.default_backend() == 'cpu' else 'vmap'


def _over_seeds(fn, seed_axis: str, per_seed: tuple[bool, ...]):
  """fn over the leading seed axis of the arguments marked in `per_seed` (the others
  shared by every seed), by 'vmap' or 'map': the same values up to float rounding.

  'map' unrolls the seeds in the program rather than looping (jax.lax.map): XLA:CPU
  runs a convolution inside a while loop far slower than the same one outside it."""
  if seed_axis == 'vmap':
    return jax.vmap(fn, in_axes=tuple(0 if p else None for p in per_seed))

  def mapped(*args):
    num_seeds = jax.tree.leaves([a for a, p in zip(args, per_seed) if p])[0].shape[0]
    outs = [fn(*(jax.tree.map(lambda x, i=i: x[i], a) if p else a
                 for a, p in zip(args, per_seed))) for i in range(num_seeds)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return mapped


def _split(x: jax.Array, k: int) -> jax.Array:
  """[batch, ...] -> [k, batch / k, ...]; part j is rows j, j + k, ..., so that
  every device keeps its own rows."""
  return jnp.swapaxes(x.reshape(-1, k, *x.shape[1:]), 0, 1)


# -- steps ------------------------------------------------------------------------------


def seeds(config) -> np.ndarray:
  """state['seed']: the seed of the network, or of each (config.num_seeds > 1). Not
  saved in checkpoints, like state['step']: the config gives it."""
  if config.num_seeds == 1:
    return np.int32(config.seed)
  return config.seed + np.arange(config.num_seeds, dtype=np.int32)


def make_train_step(graphdef, tx, config, prep: Preprocessing, splits: int = 1,
                    unravel: Callable[[jax.Array], Any] | None = None):
  """(state, batch) -> (state, metrics).

  With `unravel` (the flat layout, see `flat_optimizer`) state['params'] is one
  vector (per seed) that `unravel` turns into the network's parameter tree, so that
  the optimizer updates it as one array: per parameter, XLA:CPU compiles the update
  of each as a kernel of its own.

  With config.num_seeds > 1 the state holds that many networks (a leading seed
  axis), initialised from seeds seed, seed+1, ...: one step trains them all on the
  same batches, each with its own augmentation and dropout, vmapped or mapped over
  the seed axis (`resolve_seed_axis`).
  `config.accum_steps` micro-batches are scanned and their gradients averaged;
  `splits` (see `batch_splits`) computes each micro-batch's gradient as the mean
  over that many independent sub-batches, which XLA:CPU runs side by side on
  different cores: the same gradient up to float rounding.

  BatchNorm normalises with each (sub-)batch's statistics; the new running
  averages are the mean of those the sub- and micro-batches give. With
  config.freeze_backbone (a linear probe) the backbone's BatchNorms stay frozen too:
  they normalise with, and keep, their running averages.
  """
  accum = config.accum_steps
  train = not config.freeze_backbone

  def loss_fn(params, batch_stats, images, labels, dropout_key):
    if unravel is not None:
      params = unravel(params)
    net = nnx.merge(graphdef, model_lib.merge_weights(params, batch_stats))
    logits = net(images, dropout_key=dropout_key, train=train)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    new_stats = nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))
    return loss, ((logits.argmax(-1) == labels).mean(), new_stats)

  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def grad_fn(params, batch_stats, images, labels, dropout_key):
    """((loss, (top1, batch_stats)), grads), each the mean over `splits` sub-batches."""
    if splits == 1:
      return value_and_grad(params, batch_stats, images, labels, dropout_key)
    images, labels = _split(images, splits), _split(labels, splits)
    parts = [value_and_grad(params, batch_stats, images[j], labels[j],
                            jax.random.fold_in(dropout_key, j)) for j in range(splits)]
    return jax.tree.map(lambda *xs: sum(xs) / splits, *parts)

  def update(params, batch_stats, opt_state, step, batch, seed):
    key = jax.random.fold_in(jax.random.key(seed), step)
    augment_key, dropout_key = jax.random.split(key)
    images, labels = batch['image'], batch['label']
    if images.dtype == jnp.uint8:
      images = prep.train(images, augment_key)
    if accum == 1:
      (loss, (top1, new_stats)), grads = grad_fn(params, batch_stats, images, labels,
                                                 dropout_key)
    else:
      def micro(carry, xs):
        imgs, lbls, j = xs
        (l, (a, b)), g = grad_fn(params, batch_stats, imgs, lbls,
                                 jax.random.fold_in(dropout_key, j))
        return jax.tree.map(jnp.add, carry, (l, a, b, g)), None

      zeros = jax.tree.map(jnp.zeros_like, (0.0, 0.0, batch_stats, params))
      (loss, top1, new_stats, grads), _ = jax.lax.scan(
          micro, zeros, (_split(images, accum), _split(labels, accum), jnp.arange(accum)))
      loss, top1, new_stats, grads = jax.tree.map(lambda x: x / accum,
                                                  (loss, top1, new_stats, grads))
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {'loss': loss, 'top1': top1, 'grad_norm': optax.tree.norm(grads)}
    return params, new_stats, opt_state, metrics

  def train_step(state, batch):
    args = (state['params'], state['batch_stats'], state['opt_state'], state['step'], batch,
            state['seed'])
    if config.num_seeds == 1:
      params, batch_stats, opt_state, metrics = update(*args)
    else:
      params, batch_stats, opt_state, metrics = _over_seeds(
          update, resolve_seed_axis(config.seed_axis),
          (True, True, True, False, False, True))(*args)
    return {'params': params, 'batch_stats': batch_stats, 'opt_state': opt_state,
            'step': state['step'] + 1, 'seed': state['seed']}, metrics

  return train_step


def make_eval_step(graphdef, prep: Preprocessing, num_seeds: int = 1,
                   seed_axis: str | None = 'auto'):
  """(weights, batch) -> sums of (loss, correct top-1, correct top-5, count) over valid
  rows (per seed, over the seed axis as `resolve_seed_axis` says, when the weights
  carry one)."""

  def sums(weights, images, labels, mask):
    logits = nnx.merge(graphdef, weights)(images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = min(5, logits.shape[-1])
    top5 = (jax.lax.top_k(logits, k)[1] == labels[:, None]).any(-1)
    return {'loss': (loss * mask).sum(), 'top1': ((logits.argmax(-1) == labels) * mask).sum(),
            'top5': (top5 * mask).sum(), 'count': mask.sum()}

  if num_seeds > 1:
    sums = _over_seeds(sums, resolve_seed_axis(seed_axis), (True, False, False, False))

  def eval_step(weights, batch):
    images = batch['image']
    if images.dtype == jnp.uint8:  # once for every seed
      images = prep.eval(images)
    return sums(weights, images, batch['label'], batch['mask'])

  return eval_step


def evaluate(eval_step, params, batches, mesh) -> dict[str, float]:
  """Exact metrics over a split: padded batches, masked, summed on device."""
  totals, run_ahead = None, parallel.RunAhead()
  for batch in batches:
    sums = eval_step(params, parallel.global_batch(mesh, batch))
    totals = sums if totals is None else parallel.tree_add(totals, sums)
    run_ahead.add(totals)
  totals = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(totals))
  per_seed = {'eval_loss': totals['loss'] / totals['count'],
              'top1': totals['top1'] / totals['count'], 'top5': totals['top5'] / totals['count']}
  metrics = {k: float(np.mean(v)) for k, v in per_seed.items()}
  metrics['eval_examples'] = int(np.ravel(totals['count'])[0])
  if np.ndim(totals['count']):  # several seeds: means above, each seed here
    metrics['per_seed'] = {k: v.tolist() for k, v in per_seed.items()}
  return metrics
