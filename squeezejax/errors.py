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
  """SIGTERM (or Ctrl-C: SIGINT) arrived; a checkpoint was saved and the run can be resumed.

  `exit_status` is the shell's for that signal: 143 for SIGTERM, 130 for SIGINT.
  """

  def __init__(self, step: int, signum: int = signal.SIGTERM):
    what = 'interrupted' if signum == signal.SIGINT else 'preempted'
    super().__init__(f'{what} at step {step}; checkpoint saved, rerun the same command to '
                     'resume')
    self.step = step
    self.exit_status = 128 + signum


@contextlib.contextmanager
def on_sigterm(handler: Callable[[], None], signum: int = signal.SIGTERM):
  """Calls `handler()` on SIGTERM (preemption), or on `signum`, while inside; the old
  handler is restored. Signals reach only the main thread; elsewhere this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signum, lambda *_: handler())
  try:
    yield
  finally:
    signal.signal(signum, previous)
