"""Writing files so that a kill at any moment leaves the old file or the new one.

Every output squeezejax writes (result.json, model.json, results.jsonl, tables,
export sidecars) goes through these two functions.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_atomic(path: str, data: str | bytes) -> None:
  """Replaces `path` with `data`: temporary file, fsync, rename."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data.encode() if isinstance(data, str) else data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
