"""What a run records as it goes: metrics.jsonl and TensorBoard, the sums of the
current log window (carried through checkpoints), and the seconds of each phase."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import jax
import numpy as np

from squeezejax import files, parallel


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


class MetricWriter:
  """metrics.jsonl and TensorBoard events, written by process 0 only."""

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.tensorboard = None
    if not self.enabled:
      return
    if os.path.exists(self.path):
      # A resumed run redoes the steps after its checkpoint: drop their old lines so
      # the file reads as if the run had never stopped.
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)['step'] <= start_step]
      files.write_atomic(self.path, ''.join(kept))
    self.tensorboard = EventFile(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    files.append_line(self.path, json.dumps({'step': step, **metrics}))
    for k, v in metrics.items():
      for name, values in (v.items() if isinstance(v, dict) else [(k, v)]):
        for i, x in (enumerate(values) if isinstance(values, list) else [(None, values)]):
          self.tensorboard.scalar(name if i is None else f'{name}/seed_{i}', x, step)
    self.tensorboard.flush()

  def close(self):
    if self.tensorboard is not None:
      self.tensorboard.close()


class EventFile:
  """A TensorBoard event file of scalars, written with TensorBoard's own record
  writer and protos: TensorFlow's summary writer (flax's) would import TensorFlow
  into every run, which costs seconds of each sweep point."""

  def __init__(self, directory: str):
    # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    os.makedirs(directory, exist_ok=True)
    name = f'events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}'
    self._records = RecordWriter(open(os.path.join(directory, name), 'ab'))
    self._write(file_version='brain.Event:2')

  def _write(self, **fields) -> None:
    self._records.write(self._event(wall_time=time.time(), **fields).SerializeToString())

  def scalar(self, tag: str, value: float, step: int) -> None:
    value = self._summary.Value(tag=tag, simple_value=float(value))
    self._write(step=int(step), summary=self._summary(value=[value]))

  def flush(self) -> None:
    self._records.flush()

  def close(self) -> None:
    self._records.close()


class Stopwatch:
  """Wall seconds by phase of a run, kept in result.json's `timing`: where a run's
  time went beyond its training steps (a sweep point's overhead)."""

  def __init__(self):
    self.seconds: dict[str, float] = {}
    self._last = time.perf_counter()

  def lap(self, phase: str) -> None:
    now = time.perf_counter()
    self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
    self._last = now


class LogWindow:
  """Per-seed loss and top-1 summed since the last log step, saved in checkpoints.

  The sums stay on the device in the step's float32 (read back at log steps only),
  and a checkpoint saves them bit-exactly: a run resumed mid-window adds the same numbers
  in the same order as an uninterrupted one, so it logs the same losses to the last bit."""

  KEYS = ('loss', 'top1')

  def __init__(self, saved: dict[str, Any] | None = None):
    self.count = saved['count'] if saved else 0
    self.sums = ({k: np.asarray(saved[k], np.float32) for k in self.KEYS}
                 if self.count else None)

  def add(self, metrics) -> None:
    metrics = {k: metrics[k] for k in self.KEYS}
    if self.sums is None:
      self.sums = metrics
    else:
      self.sums = parallel.tree_add(
          {k: self._on_device(self.sums[k], metrics[k]) for k in self.KEYS}, metrics)
    self.count += 1

  @staticmethod
  def _on_device(total, like):
    # A resumed window's saved sums go where the step's metrics live (across processes too).
    return jax.device_put(total, like.sharding) if isinstance(total, np.ndarray) else total

  def means(self) -> dict[str, np.ndarray]:
    """Per-seed means, one host transfer."""
    sums = jax.device_get(self.sums)
    return {k: np.asarray(sums[k], np.float64).reshape(-1) / self.count for k in self.KEYS}

  def to_dict(self) -> dict[str, Any]:
    sums = jax.device_get(self.sums) if self.sums else dict.fromkeys(self.KEYS, 0.0)
    return {**{k: np.asarray(sums[k]).tolist() for k in self.KEYS}, 'count': self.count}


def timing(clock: Stopwatch, wall_s: float, images: int, img_s: float | None) -> dict:
  """Seconds by phase, and the run's overhead: its wall time beyond its steps at the
  steady rate (the median logged img/s, first window excluded)."""
  seconds = {f'{phase}_s': round(s, 3) for phase, s in clock.seconds.items()}
  if img_s:
    seconds['steady_train_s'] = round(images / img_s, 3)
    seconds['overhead_s'] = round(wall_s - images / img_s, 3)
  return seconds
