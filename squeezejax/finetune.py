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


def main(argv: list[str]) -> int:
  argv, overrides = configs.split_overrides(argv)
  parser = cli.ArgumentParser(
      prog='squeezejax finetune', description='Fine-tune a model directory on an image folder.')
  parser.add_argument('--init', required=True,
                      help='model directory to start from (convert output or train workdir)')
  parser.add_argument('--data', required=True,
                      help='image folder: PATH/CLASS/*.png|jpg or PATH/{train,test}/CLASS/...')
  parser.add_argument('--num_classes', type=int, required=True,
                      help='classes in the folder (checked against its subfolders)')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--freeze_backbone', action='store_true', help='train conv10 only')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--image_size', type=int, default=0,
                      help='0 = the init model\'s (224 for torchvision weights)')
  args = parser.parse_args(argv)
  for name in ('steps', 'batch_size'):
    if getattr(args, name) < 1:
      raise UserError(f'--{name}={getattr(args, name)}: expected an integer >= 1')
  if os.path.realpath(args.workdir) == os.path.realpath(args.init):
    raise UserError(f'--workdir={args.workdir!r} is the --init model directory: fine-tuning '
                    'there would replace the model it starts from; expected a new --workdir')
  from squeezejax import data  # pylint: disable=g-import-not-at-top
  folder = data.open_folder(os.path.expanduser(args.data))
  if len(folder.classes) != args.num_classes:
    raise UserError(
        f'--num_classes={args.num_classes} but {args.data!r} has {len(folder.classes)} '
        f'class folders ({", ".join(folder.classes[:6])}{", ..." if len(folder.classes) > 6 else ""})')
  config = finetune_config(args.init, args.data, freeze_backbone=args.freeze_backbone,
                           steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           image_size=args.image_size)
  configs.apply_overrides(config, overrides)
  result = finetune(config, args.workdir)
  print(format_report(result))
  print(f'wrote {os.path.join(args.workdir, REPORT_JSON)} and '
        f'{os.path.join(args.workdir, CONFUSION_PNG)}')
  return 0
