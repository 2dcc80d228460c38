"""Python configs: `path/to/file.py:arg` -> get_config(arg), plus `--config.a.b=v` overrides.

The same syntax as ml_collections' config_flags, without absl's global flag
state, so the CLI, sweeps and tests all load configs through one function.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys

import ml_collections

from squeezejax.errors import UserError


class ConfigError(UserError):
  pass


def load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f'--config={path!r}: no such file')
  name = 'squeezejax_config_' + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'--config={path!r} defines no get_config(arg)')
  return module


def load(config_arg: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]`, applies string overrides, returns a locked ConfigDict."""
  path, _, arg = config_arg.partition(':')
  module = load_module(path)
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except UserError:
    raise
  except (KeyError, ValueError) as e:
    raise ConfigError(f'--config={config_arg!r}: {e}') from None
  config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
  config.lock()
  apply_overrides(config, overrides or {})
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, object]) -> None:
  """Sets dotted keys; strings are parsed as Python literals where possible."""
  for key, raw in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ConfigError(f'--config.{key}: unknown config key {part!r}')
      node = node[part]
    if leaf not in node:
      raise ConfigError(f'--config.{key}: unknown config key; known keys here: '
                        f'{", ".join(sorted(node.keys()))}')
    value = _parse(raw) if isinstance(raw, str) else raw
    current = node[leaf]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(current, str) and not isinstance(value, str):
      value = str(raw)
    try:
      with node.unlocked():
        node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ConfigError(f'--config.{key}={raw!r}: expected {type(current).__name__} '
                        f'({e})') from None


def _parse(raw: str):
  try:
    return ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    return raw


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separates `--config.key=value` (or `--config.key value`) from other arguments."""
  rest, overrides = [], {}
  it = iter(argv)
  for arg in it:
    if arg.startswith('--config.'):
      key, eq, value = arg[len('--config.'):].partition('=')
      if not eq:
        value = next(it, None)
        if value is None:
          raise ConfigError(f'--config.{key} needs a value')
      overrides[key] = value
    else:
      rest.append(arg)
  return rest, overrides
