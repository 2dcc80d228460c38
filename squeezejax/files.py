"""Writing files so that a kill at any moment leaves the old file or the new one.

Every output squeezejax writes (result.json, model.json, results.jsonl, tables,
export sidecars) goes through these two functions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from typing import Any


def write_atomic(path: str, data: str | bytes) -> None:
  """Replaces `path` with `data`: temporary file, fsync, rename."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data.encode() if isinstance(data, str) else data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def cache_dir(kind: str) -> str:
  """Where squeezejax keeps what it can rebuild (decoded datasets, built kernels):
  $XDG_CACHE_HOME/squeezejax/KIND, or ~/.cache/squeezejax/KIND."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'squeezejax', kind)


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=1) + '\n')


def append_line(path: str, line: str) -> None:
  """One line in one write, then fsync: a kill leaves the line whole or absent."""
  data = (line.rstrip('\n') + '\n').encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    written = os.write(fd, data)
    if written != len(data):
      raise OSError(f'short write to {path}: {written} of {len(data)} bytes')
    os.fsync(fd)
  finally:
    os.close(fd)


# -- output paths, checked before any work ----------------------------------------------


def check_output_file(path: str, flag: str) -> str:
  """`path` can be written as a file: not a directory, in a writable directory that exists."""
  from squeezejax.errors import UserError  # pylint: disable=g-import-not-at-top
  if not path:
    raise UserError(f'{flag} is empty: expected a file path')
  parent = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise UserError(f'{flag}={path!r} is a directory: expected a file path')
  if not os.path.isdir(parent):
    raise UserError(f'{flag}={path!r}: directory {parent!r} does not exist')
  if not os.access(parent, os.W_OK):
    raise UserError(f'{flag}={path!r}: directory {parent!r} is not writable')
  return path


def check_output_dir(path: str, flag: str) -> str:
  """`path` is, or can be created as, a writable directory."""
  from squeezejax.errors import UserError  # pylint: disable=g-import-not-at-top
  if not path:
    raise UserError(f'{flag} is empty: expected a directory')
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'{flag}={path!r} is a file: expected a directory')
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
    raise UserError(f'{flag}={path!r} cannot be created or written: {existing!r} is '
                    f'{"not a directory" if not os.path.isdir(existing) else "not writable"}')
  return path


# -- one writer per directory ------------------------------------------------------------

LOCK = '.lock'


@contextlib.contextmanager
def lock(directory: str, holder: str):
  """Holds DIRECTORY/.lock while inside, so that one process at a time writes there.

  flock(2), non-blocking: a second holder gets a one-line UserError naming the first
  (`holder`, e.g. 'squeezejax sweep', with its pid and host). The kernel releases the
  lock when the holder exits, however it exits, so a killed holder leaves no stale
  lock; the file stays, holding the last holder's name.
  """
  from squeezejax.errors import UserError  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      other = os.pread(fd, 500, 0).decode(errors='replace').strip() or 'another process'
      raise UserError(f'{directory!r} is in use by {other}: wait for it to finish, or '
                      'stop it') from None
    except OSError as e:  # e.g. a network file system without locks
      raise UserError(f'{directory!r} cannot be locked ({e.strerror}): expected a file '
                      'system with flock(2) locks') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{holder} (pid {os.getpid()} on {socket.gethostname()})\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock
