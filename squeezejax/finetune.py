"""`squeezejax finetune`: adapt a model directory to your own image folder.

  squeezejax convert --from=squeezenet1_1-b8a52dc0.pth --out=models/sq11
  squeezejax finetune --init=models/sq11 --data=~/xray --num_classes=2 \\
      --freeze_backbone --steps=300 --workdir=runs/xray

The folder is PATH/CLASS/*.png|jpg (every 5th image of each class held out for
testing) or PATH/train/CLASS/... with PATH/test/CLASS/... (see the data
package). This builds a trainer config (`init_from`, `freeze_backbone`,
`dataset='folder:PATH'`), runs `squeezejax.train.train_and_evaluate`, which
replaces conv10 when the number of classes differs and, with
`--freeze_backbone`, trains conv10 only; then it evaluates the held-out split
and writes `finetune_report.json` and `confusion_matrix.png` to the workdir
(overall and per-class accuracy, confusion matrix). Any trainer field can
still be set with `--config.FIELD=VALUE`.

`--probe=LAYERS` is a linear probe instead (no fine-tuning, no trainer):

  squeezejax finetune --init=models/sq11 --data=~/xray --probe=conv1,fire5,fire9 \\
      --workdir=runs/xray_probe

Every image goes once through the frozen network (evaluation mode, the init
model's own preprocessing, as `predict`); each named map of `model.features`
is global-average-pooled, and a softmax regression is trained on each layer's
pooled train features, one jitted full-batch optax loop per layer. The
held-out accuracy of each layer (overall and per class) is printed as a
table and written to `probe_report.json`; the probes' weights go to
`probe_weights.npz`. The model directory is only read.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from squeezejax import cli, files
from squeezejax import configs
from squeezejax.errors import UserError

REPORT_JSON = 'finetune_report.json'
CONFUSION_PNG = 'confusion_matrix.png'
PROBE_JSON = 'probe_report.json'
PROBE_NPZ = 'probe_weights.npz'
# The probe is convex: full-batch Adam on standardised features with these defaults
# reaches the regularised optimum, so layers are compared at convergence, not at
# an optimisation budget.
PROBE_STEPS, PROBE_LR, PROBE_L2 = 1000, 0.1, 1e-3



def finetune_config(init: str, data_path: str, *, freeze_backbone: bool = False,
                    steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
                    image_size: int = 0, conv10_relu: bool | None = None,
                    seed: int = 0):
  """The trainer config of one fine-tuning run (a locked ConfigDict).

  AdamW with a short warm-up and cosine decay: the usual transfer-learning
  recipe (the paper's SGD schedule is for 170k steps from scratch). The network
  is the init model's spec; `config.spec.*` fields change it only where set.
  `conv10_relu=None` keeps the init model's head, except that a new head
  (different class count) drops the ReLU: a freshly initialised N(0, 0.01)
  conv10 with a ReLU can leave classes dead (README, "10-class training").
  """
  from squeezejax import checkpoint  # pylint: disable=g-import-not-at-top
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  init_spec, init_meta = checkpoint.read_model_json(init)
  folder = data.open_folder(os.path.expanduser(data_path))
  if conv10_relu is None and len(folder.classes) != init_spec.num_classes:
    conv10_relu = False
  c = configs.base_config()
  c.init_from = init
  c.freeze_backbone = freeze_backbone
  c.dataset = f'folder:{os.path.expanduser(data_path)}'
  c.train_split, c.eval_split = 'train', 'test'
  c.image_size = image_size or int(init_meta.get('preprocessing', {}).get('image_size') or
                                   init_spec.default_image_size)
  if conv10_relu is not None:
    c.spec.conv10_relu = bool(conv10_relu)
  c.augment = 'crop_flip'
  c.optimizer, c.schedule, c.lr = 'adamw', 'cosine', lr
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.total_steps = steps
  c.warmup_steps = min(50, steps // 10)
  c.batch_size = batch_size
  c.eval_batch_size = batch_size
  c.log_every = max(1, min(50, steps // 5))
  c.checkpoint_every = max(1, min(500, steps))
  c.keep_checkpoints = 1
  c.seed = seed
  c.lock()
  return c


# -- evaluation report ---------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """counts[true, predicted]."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def predictions(workdir: str, dataset: str, split: str, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(labels, predicted labels, class names) of a trained model on a split."""
  from squeezejax import checkpoint, data, predict  # pylint: disable=g-import-not-at-top
  spec, params, meta = checkpoint.load_model(workdir)
  pre = meta['preprocessing']
  split_data = data.load_arrays(dataset, split, image_size=pre['image_size'])
  prep = data.Preprocessing(pre['image_size'], tuple(pre['mean']), tuple(pre['std']))
  logits = predict.logits(spec, params, split_data.images, batch_size, prepare=prep.eval)
  names = list(meta.get('class_names') or split_data.class_names)
  return split_data.labels, logits.argmax(-1), names


def report(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> dict[str, Any]:
  counts = confusion_matrix(labels, predicted, len(class_names))
  per_class = {name: (float(counts[i, i] / counts[i].sum()) if counts[i].sum() else None)
               for i, name in enumerate(class_names)}
  return {'accuracy': float(np.trace(counts) / counts.sum()), 'examples': int(counts.sum()),
          'per_class_accuracy': per_class, 'class_names': class_names,
          'confusion_matrix': counts.tolist()}


def format_report(result: dict[str, Any]) -> str:
  names = result['class_names']
  width = max(8, *(len(n) for n in names))
  lines = [f'test accuracy {result["accuracy"]:.4f} on {result["examples"]} images', '',
           f'{"class":<{width}}  accuracy  images']
  counts = np.asarray(result['confusion_matrix'])
  for i, name in enumerate(names):
    acc = result['per_class_accuracy'][name]
    lines.append(f'{name:<{width}}  {"-" if acc is None else f"{acc:.4f}":>8}  '
                 f'{counts[i].sum():>6}')
  lines += ['', 'confusion matrix (rows: true class, columns: predicted)',
            ' ' * width + ''.join(f'{i:>7}' for i in range(len(names)))]
  for i, name in enumerate(names):
    lines.append(f'{name:<{width}}' + ''.join(f'{c:>7}' for c in counts[i]))
  return '\n'.join(lines)


def finetune(config, workdir: str) -> dict[str, Any]:
  """Trains with `config`, then writes and returns the held-out evaluation report."""
  from squeezejax import train  # pylint: disable=g-import-not-at-top
  train_result = train.train_and_evaluate(config, workdir)
  labels, predicted, names = predictions(workdir, config.dataset, config.eval_split)
  result = report(labels, predicted, names)
  result['train_result'] = {k: train_result.get(k) for k in ('top1', 'top5', 'steps', 'wall_s')}
  files.write_json(os.path.join(workdir, REPORT_JSON), result)
  from squeezejax import report as report_lib  # pylint: disable=g-import-not-at-top (matplotlib)
  report_lib.confusion_figure(result, os.path.join(workdir, CONFUSION_PNG))
  return result


# -- linear probe ---------------------------------------------------------------------


def probe_layers(spec, names: str) -> list[str]:
  """The feature maps named in a --probe value ('all' = every one), in network order."""
  allowed = list(spec.feature_strides())
  wanted = allowed if names.strip() == 'all' else [n.strip() for n in names.split(',')]
  bad = [n for n in wanted if n not in allowed]
  if bad or not wanted:
    raise UserError(f'--probe={names}: unknown layer {", ".join(map(repr, bad)) or "(none)"}; '
                    f'expected a comma-separated list of {", ".join(allowed)}, or all')
  return [n for n in allowed if n in wanted]


def split_paths(folder, split: str) -> list[tuple[str, int]]:
  """(path, label) of every image in one split of a `data.open_folder` folder."""
  if split not in folder.split_sizes or not folder.split_sizes[split]:
    raise UserError(f'image folder {folder.root!r} has no {split!r} images')
  return folder.labelled_files(split)


def pooled_features(spec, params, preprocessing: dict[str, Any], paths: list[str],
                    layers: list[str], batch_size: int = 32) -> dict[str, np.ndarray]:
  """{layer: [images, channels]} global-average-pooled maps of the frozen network.

  Images are read in batches (a 227 px split need not fit in memory), padded to
  one size (data.padded_batches), so XLA compiles one shape for every split.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from squeezejax import data, model as model_lib, parallel, predict  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model_lib.from_params(spec, params))

  def pooled(s, x):
    maps = model_lib.features(nnx.merge(graphdef, s), x)  # evaluation mode: no dropout
    return {n: jnp.mean(maps[n][0].astype(jnp.float32), axis=(1, 2)) for n in layers}

  fn = parallel.jit(pooled)
  out = {n: [] for n in layers}
  for start in range(0, len(paths), batch_size):
    images = []
    for path in paths[start:start + batch_size]:
      try:
        images.append(predict.load_image(path, preprocessing, spec.in_channels))
      except UserError as e:
        raise UserError(f'{path}: {e}') from None
    batch, = data.padded_batches({'image': np.stack(images)}, batch_size)
    for n, f in fn(state, batch['image']).items():
      out[n].append(np.asarray(f)[batch['mask'] > 0])
  return {n: np.concatenate(f) for n, f in out.items()}


def train_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, *,
                steps: int = PROBE_STEPS, lr: float = PROBE_LR, l2: float = PROBE_L2) -> dict:
  """Softmax regression on [n, c] features: full-batch Adam (cosine decay) in one jit.

  Features are standardised with the train set's mean and std first: pooled
  maps of different layers differ in scale by orders of magnitude, and one
  learning rate should fit them all. `l2` penalises the kernel (not the bias).
  Returns {kernel, bias, mean, std, loss} (loss: per step).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  @jax.jit
  def fit(x, y):
    mean, std = x.mean(0), x.std(0) + 1e-6  # a dead channel stays 0, not NaN
    z = (x - mean) / std
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    p = {'kernel': jnp.zeros((x.shape[1], num_classes)), 'bias': jnp.zeros(num_classes)}

    def loss_fn(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(z @ p['kernel'] + p['bias'], y)
      return ce.mean() + 0.5 * l2 * jnp.sum(p['kernel'] ** 2)

    def step(carry, _):
      p, opt = carry
      loss, grads = jax.value_and_grad(loss_fn)(p)
      updates, opt = tx.update(grads, opt, p)
      return (optax.apply_updates(p, updates), opt), loss

    (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), length=steps)
    return {**p, 'mean': mean, 'std': std, 'loss': losses}

  return jax.tree.map(np.asarray, fit(jnp.asarray(features, jnp.float32),
                                      jnp.asarray(labels, jnp.int32)))


def probe_predict(probe: dict, features: np.ndarray) -> np.ndarray:
  """Predicted labels of a `train_probe` result."""
  return (((features - probe['mean']) / probe['std']) @ probe['kernel']
          + probe['bias']).argmax(-1)


def linear_probe(init: str, data_path: str, layers: str, workdir: str, *,
                 steps: int = PROBE_STEPS, lr: float = PROBE_LR, l2: float = PROBE_L2,
                 image_size: int = 0, batch_size: int = 32) -> dict[str, Any]:
  """Probes each named layer of a model directory; writes and returns the report."""
  from squeezejax import checkpoint, data  # pylint: disable=g-import-not-at-top
  spec, meta = checkpoint.read_model_json(init)
  names = probe_layers(spec, layers)  # before any work, so a bad name writes nothing
  folder = data.open_folder(os.path.expanduser(data_path))
  train, test = split_paths(folder, 'train'), split_paths(folder, 'test')
  pre = dict(meta.get('preprocessing') or {'image_size': spec.default_image_size})
  if image_size:  # keep torchvision's/Caffe's resize:crop ratio
    if pre.get('resize'):
      pre['resize'] = int(round(pre['resize'] * image_size / pre['image_size']))
    pre['image_size'] = image_size
  _, params, _ = checkpoint.load_model(init)
  strides = spec.feature_strides()
  y_train, y_test = (np.array([label for _, label in s], np.int32) for s in (train, test))
  x_train, x_test = (pooled_features(spec, params, pre, [p for p, _ in s], names, batch_size)
                     for s in (train, test))
  result = {'init': init, 'data': data_path, 'train_examples': len(train),
            'image_size': pre['image_size'], 'class_names': list(folder.classes),
            'probe': {'steps': steps, 'lr': lr, 'l2': l2, 'pooling': 'global average',
                      'optimizer': 'adam, cosine decay, full batch, standardised features'},
            'layers': {}}
  weights = {}
  for name in names:
    probe = train_probe(x_train[name], y_train, len(folder.classes), steps=steps, lr=lr, l2=l2)
    layer = report(y_test, probe_predict(probe, x_test[name]), list(folder.classes))
    layer.update(channels=int(x_train[name].shape[1]), stride=strides[name],
                 train_accuracy=float(np.mean(probe_predict(probe, x_train[name]) == y_train)),
                 final_loss=float(probe['loss'][-1]))
    result['layers'][name] = layer
    weights.update({f'{name}/{k}': v for k, v in probe.items() if k != 'loss'})
  os.makedirs(workdir, exist_ok=True)
  np.savez(os.path.join(workdir, PROBE_NPZ), **weights)
  files.write_json(os.path.join(workdir, PROBE_JSON), result)  # last: the run is complete
  return result


def format_probe(result: dict[str, Any]) -> str:
  """The layer-wise table (top-1 per layer), then per-class test accuracy per layer."""
  layers, names = result['layers'], result['class_names']
  first = next(iter(layers.values()))
  lines = [f'linear probe on frozen, global-average-pooled features: {result["train_examples"]} '
           f'train / {first["examples"]} test images, {len(names)} classes, '
           f'{result["image_size"]} px (chance {1 / len(names):.4f})', '',
           f'{"layer":<8}  channels  stride  train top-1  test top-1']
  for name, r in layers.items():
    lines.append(f'{name:<8}  {r["channels"]:>8}  {r["stride"]:>6}  '
                 f'{r["train_accuracy"]:>11.4f}  {r["accuracy"]:>10.4f}')
  width = max(8, *(len(n) for n in names))
  lines += ['', 'per-class test accuracy',
            f'{"class":<{width}}' + ''.join(f'  {n:>7}' for n in layers)]
  for name in names:
    accs = [r['per_class_accuracy'][name] for r in layers.values()]
    lines.append(f'{name:<{width}}' + ''.join(
        f'  {"-" if a is None else f"{a:.4f}":>7}' for a in accs))
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(
      prog='squeezejax finetune', description='Fine-tune a model directory on an image folder, or '
      'linear-probe its frozen features (--probe).')
  parser.add_argument('--init', required=True,
                      help='model directory to start from (convert output or train workdir)')
  parser.add_argument('--data', required=True,
                      help='image folder: PATH/CLASS/*.png|jpg or PATH/{train,test}/CLASS/...')
  parser.add_argument('--num_classes', type=int,
                      help='classes in the folder (checked against its subfolders); '
                      'required unless --probe')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--freeze_backbone', action='store_true', help='train conv10 only')
  parser.add_argument('--steps', type=int, default=None,
                      help=f'default 300, or {PROBE_STEPS} (full-batch) for --probe')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--lr', type=float, default=None,
                      help=f'default 1e-3, or {PROBE_LR} for --probe')
  parser.add_argument('--probe', default='',
                      help='linear probe instead of fine-tuning: comma-separated feature maps '
                      '(e.g. conv1,fire5,fire9) or all; --steps and --lr are the probe\'s')
  parser.add_argument('--l2', type=float, default=PROBE_L2,
                      help='--probe only: L2 penalty on the probe\'s kernel')
  parser.add_argument('--image_size', type=int, default=0,
                      help='0 = the init model\'s (224 for torchvision weights)')
  args = parser.parse_args(argv)
  if args.num_classes is None and not args.probe:
    raise UserError('--num_classes is required to fine-tune (it may be left out with --probe)')
  if args.steps is None:
    args.steps = PROBE_STEPS if args.probe else 300
  for name in ('steps', 'batch_size'):
    if getattr(args, name) < 1:
      raise UserError(f'--{name}={getattr(args, name)}: expected an integer >= 1')
  if os.path.realpath(args.workdir) == os.path.realpath(args.init):
    raise UserError(f'--workdir={args.workdir!r} is the --init model directory: fine-tuning '
                    'there would replace the model it starts from; expected a new --workdir')
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  folder = data.open_folder(os.path.expanduser(args.data))
  if args.num_classes is not None and len(folder.classes) != args.num_classes:
    raise UserError(
        f'--num_classes={args.num_classes} but {args.data!r} has {len(folder.classes)} '
        f'class folders ({", ".join(folder.classes[:6])}{", ..." if len(folder.classes) > 6 else ""})')
  if args.probe:
    if overrides:
      raise UserError(f'--config.{next(iter(overrides))}: --config.* fields are the trainer\'s; '
                      '--probe does not train the network')
    result = linear_probe(args.init, args.data, args.probe, args.workdir, steps=args.steps,
                          lr=PROBE_LR if args.lr is None else args.lr, l2=args.l2,
                          image_size=args.image_size, batch_size=args.batch_size)
    print(format_probe(result))
    print(f'wrote {os.path.join(args.workdir, PROBE_JSON)} and '
          f'{os.path.join(args.workdir, PROBE_NPZ)}')
    return 0
  config = finetune_config(args.init, args.data, freeze_backbone=args.freeze_backbone,
                           steps=args.steps, batch_size=args.batch_size,
                           lr=1e-3 if args.lr is None else args.lr,
                           image_size=args.image_size)
  configs.apply_overrides(config, overrides)
  result = finetune(config, args.workdir)
  print(format_report(result))
  print(f'wrote {os.path.join(args.workdir, REPORT_JSON)} and '
        f'{os.path.join(args.workdir, CONFUSION_PNG)}')
  return 0
