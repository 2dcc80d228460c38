"""`squeezejax COMMAND ...`: a dispatcher; each command's flags live beside its code.

User mistakes (`UserError`) print one line and exit 2; anything else is a bug
and keeps its traceback. By default only squeezejax's own lines reach the
terminal; `--verbose` (anywhere on the line) lets TensorFlow, TFDS and XLA speak.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from squeezejax.errors import UserError

VERBOSE_ENV = 'SQUEEZEJAX_VERBOSE'  # inherited by sweep jobs

COMMANDS = {
    'summary': ('squeezejax.summary', 'per-layer table, parameters, size and MACs of a network'),
    'train': ('squeezejax.train', 'train and evaluate one config in a workdir (resumes)'),
    'eval': ('squeezejax.train', 'evaluate the latest checkpoint of a workdir'),
    'sweep': ('squeezejax.sweep', 'run a design-space sweep defined in a config'),
    'report': ('squeezejax.report', 'figures and tables from a sweep workdir'),
    'convert': ('squeezejax.convert', 'torchvision or Deep Compression weights -> model dir'),
    'finetune': ('squeezejax.finetune', 'fine-tune a checkpoint on an image folder'),
    'predict': ('squeezejax.predict', 'top-k classes of images from a checkpoint'),
    'compress': ('squeezejax.compression.compress',
                 'Deep Compression: prune, share weights, write the .net file'),
    'export': ('squeezejax.export', 'export a checkpoint for deployment'),
    'bench': ('squeezejax.bench', 'train/eval/input throughput, optionally vs PyTorch'),
}


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line (flag, value, what is allowed) and a UserError."""

  def error(self, message):
    raise UserError(message)


def verbose() -> bool:
  return os.environ.get(VERBOSE_ENV, '') not in ('', '0')


def usage() -> str:
  lines = ['usage: squeezejax COMMAND [flags] [--verbose]   (squeezejax COMMAND --help)', '',
           'commands:']
  lines += [f'  {name:<9} {text}' for name, (_, text) in COMMANDS.items()]
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if '--verbose' in argv or '-v' in argv:
    argv = [a for a in argv if a not in ('--verbose', '-v')]
    os.environ[VERBOSE_ENV] = '1'
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(usage())
    return 0
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f'squeezejax: error: unknown command {command!r}; expected one of '
          f'{", ".join(COMMANDS)}', file=sys.stderr)
    return 2
  from squeezejax import parallel  # pylint: disable=g-import-not-at-top (--help stays fast)
  parallel.configure_host()  # before JAX starts: CPU devices, malloc
  module = importlib.import_module(COMMANDS[command][0])
  entry = getattr(module, 'eval_main' if command == 'eval' else 'main')
  try:
    return entry(rest) or 0
  except UserError as e:
    print(f'squeezejax {command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
