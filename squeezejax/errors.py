"""What is not a bug: a user mistake, and a preemption (with its SIGTERM hook).

The CLI prints a `UserError` as one line and exits 2. `Preempted` is what the
trainer raises after saving a checkpoint on SIGTERM; callers (the CLI, sweeps)
catch it by type and exit 143, so that a rerun resumes.
"""

import contextlib
import signal
import threading
from typing import Callable


class UserError(ValueError):
  """Bad input from the user (flag, config, data, path); not a bug."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

  def __init__(self, step: int):
    super().__init__(f'preempted at step {step}; checkpoint saved, rerun to resume')
    self.step = step


@contextlib.contextmanager
def on_sigterm(handler: Callable[[], None]):
  """Calls `handler()` on SIGTERM (preemption) while inside; the old handler is restored.

  Signals reach only the main thread; elsewhere this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: handler())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
