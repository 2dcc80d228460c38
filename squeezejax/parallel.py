"""Device mesh, shardings, multi-host set-up and global batches.

One mesh axis, 'data', over every device of every process. Data parallel
replicates the state; FSDP shards each parameter (and its optimizer state) on
its largest dimension that divides the device count. Shardings are explicit at
the jit boundary (what pjit was); inside the step XLA propagates them.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import importlib.metadata
import logging
import os
import platform
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from squeezejax import configs, onednn
from squeezejax.errors import UserError

DATA = 'data'


MAX_AUTO_CPU_DEVICES = 8
# XLA:CPU aborts the process (SIGABRT) when one device's thread is 40 s late for a
# collective, such as the data-parallel gradient all-reduce: on a loaded machine the
# OS can starve a thread that long. Between the devices of one process a late thread
# is not a deadlock, so wait much longer (and warn later). Only XLA_FLAGS sets these
# (as jit compiler options they are accepted and ignored).
CPU_COLLECTIVE_TIMEOUT_S = 1800
CPU_COLLECTIVE_FLAGS = ('xla_cpu_collective_call_terminate_timeout_seconds',
                        'xla_cpu_collective_call_warn_stuck_timeout_seconds',
                        'xla_cpu_collective_timeout_seconds')


# XLA:CPU runs each device's share of a multi-device program from a client thread pool
# of one thread per core (at least one per device), and a launch waits there once its
# device has 32 programs queued. A pool thread waiting so, while the other pool threads
# run one device's half of an all-reduce whose other half is still queued, is a
# deadlock: a plain jitted data-parallel loop that never syncs hangs within seconds on
# 2 CPU devices with 2 cores. Loops of steps wait for the outputs of RUN_AHEAD_STEPS
# steps back instead (`RunAhead`), so no queue gets near that cap.
RUN_AHEAD_STEPS = 4


class RunAhead:
  """Paces a loop of jitted steps: `add(outputs)` returns once the outputs of
  RUN_AHEAD_STEPS steps back are computed, so the devices stay busy with the steps
  queued after them but never reach XLA:CPU's cap on programs in flight."""

  def __init__(self, steps: int = RUN_AHEAD_STEPS):
    self._steps = steps
    self._pending: collections.deque = collections.deque()

  def add(self, outputs: Any) -> None:
    self._pending.append(outputs)
    if len(self._pending) > self._steps:
      jax.block_until_ready(self._pending.popleft())


@jax.jit
def tree_add(a: Any, b: Any) -> Any:
  """a + b leaf by leaf, as one program (one dispatch where jnp.add would be one a leaf)."""
  return jax.tree.map(jnp.add, a, b)


@functools.cache
def configure_host() -> dict[str, Any]:
  """Process set-up for CPU training; call before JAX runs anything (the CLI does).

  Only where JAX will compute on the CPU (no GPU/TPU plugin installed, or
  JAX_PLATFORMS=cpu), and never over a choice the user made:

  - One JAX device per core (rounded down to a power of two so that the usual
    batch sizes divide, at most MAX_AUTO_CPU_DEVICES), unless JAX_NUM_CPU_DEVICES,
    jax_num_cpu_devices or XLA's host device count is set. XLA:CPU runs most
    kernels of one program on one thread; data parallel over per-core devices
    keeps every core busy (docs/performance.md has the measurements).
  - XLA:CPU's collectives wait CPU_COLLECTIVE_TIMEOUT_S for a late device thread
    instead of aborting after 40 s, unless XLA_FLAGS sets any of CPU_COLLECTIVE_FLAGS.
  - glibc's malloc keeps freed memory for reuse (one arena, no mmap, no trim),
    unless a MALLOC_* or GLIBC_TUNABLES variable is set. XLA:CPU allocates each
    step's temporaries on a worker thread, whose malloc arena would map and
    unmap them every step (page faults and system time on every step). The
    process keeps its peak memory.

  Returns what was applied (the first call decides; later calls return the same).
  """
  applied = {'cpu_devices': None, 'malloc_reuse': False, 'collective_timeout_s': None}
  platforms = (jax.config.jax_platforms or '').split(',')
  if platforms[0] not in ('', 'cpu') or (not platforms[0] and _accelerator_plugins()):
    return applied
  user_set = ('JAX_NUM_CPU_DEVICES' in os.environ or jax.config.jax_num_cpu_devices != -1
              or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''))
  if not user_set:
    count = min(1 << (cpu_count().bit_length() - 1), MAX_AUTO_CPU_DEVICES)
    try:
      jax.config.update('jax_num_cpu_devices', count)
      applied['cpu_devices'] = count
    except RuntimeError:  # JAX already started its backends: keep what they have
      pass
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if not any(flag in xla_flags for flag in CPU_COLLECTIVE_FLAGS):
    os.environ['XLA_FLAGS'] = ' '.join(
        [xla_flags, *(f'--{flag}={CPU_COLLECTIVE_TIMEOUT_S}' for flag in CPU_COLLECTIVE_FLAGS)]
    ).strip()
    applied['collective_timeout_s'] = CPU_COLLECTIVE_TIMEOUT_S
  if platform.libc_ver()[0] == 'glibc' and not any(
      k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES' for k in os.environ):
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # <malloc.h>
    applied['malloc_reuse'] = all(libc.mallopt(option, value) == 1 for option, value in (
        (m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1)))
  return applied


def cpu_count() -> int:
  """The cores this process may run on."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


# The /proc/cpuinfo flags that decide which matmul/convolution kernels a library can use.
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')


@functools.cache
def cpu_info() -> dict[str, Any]:
  """The CPU's model name and which of CPU_FLAGS it has (/proc/cpuinfo; flags None
  where that file or its x86 `flags` line is missing)."""
  info = {'model_name': platform.processor() or None, 'flags': None}
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().splitlines()
  except OSError:
    return info
  for line in lines:
    key, _, value = line.partition(':')
    key = key.strip()
    if key == 'model name' and value.strip():
      info['model_name'] = value.strip()
    elif key == 'flags' and info['flags'] is None:
      present = set(value.split())
      info['flags'] = {flag: flag in present for flag in CPU_FLAGS}
  return info


def describe_cpu(cpu: dict[str, Any]) -> str:
  """'MODEL (flags it has; no flags it lacks)' of a `cpu_info`."""
  flags = cpu['flags']
  if flags is None:
    return f'{cpu["model_name"] or "unknown CPU"} (flags unknown)'
  have = [f for f in CPU_FLAGS if flags[f]]
  lack = [f for f in CPU_FLAGS if not flags[f]]
  return (f'{cpu["model_name"] or "unknown CPU"} ({", ".join(have) or "none of " + ", ".join(lack)}'
          + (f'; no {", ".join(lack)})' if have and lack else ')'))


def _accelerator_plugins() -> list[str]:
  """Installed JAX GPU/TPU plugins (distribution names)."""
  names = (d.metadata['Name'] or '' for d in importlib.metadata.distributions())
  return [n for n in names if n.lower().replace('_', '-').startswith(
      ('jax-cuda', 'jax-rocm', 'libtpu'))]


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """jax.distributed for multi-host runs; a no-op for one process."""
  if not coordinator_address or num_processes <= 1:
    return
  if jax.distributed.is_initialized():
    return
  # CPU-only multi-process (tests, CPU clusters) needs a collectives backend.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D 'data' mesh over every device, or over the first `num_devices`."""
  devices = jax.devices()
  if num_devices:
    if jax.process_count() > 1 or not 1 <= num_devices <= len(devices):
      raise UserError(f'num_devices={num_devices} is not allowed: expected 0 (all) or '
                      f'1..{len(devices)} in a single-process run')
    devices = devices[:num_devices]
  # Auto: shardings are fixed at the jit boundary and XLA propagates them
  # through the convolutions (pjit semantics).
  return jax.make_mesh((len(devices),), (DATA,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def resolve_convolutions(cpu_convolutions: str = 'auto') -> str:
  """Who runs a CPU program's convolutions: 'auto' is 'onednn' where its wheels are
  installed (squeezejax.onednn), else 'eigen'. Other backends get their own ('')."""
  if cpu_convolutions not in configs.CPU_CONVOLUTIONS:
    raise UserError(f'cpu_convolutions={cpu_convolutions!r} is not allowed: expected one of '
                    f'{", ".join(configs.CPU_CONVOLUTIONS)}')
  if jax.default_backend() != 'cpu':
    return ''
  if cpu_convolutions == 'auto':
    return 'onednn' if onednn.installed() else 'eigen'
  return cpu_convolutions


def compiler_options(cpu_convolutions: str = 'auto') -> dict[str, str]:
  """XLA options for `jax.jit`: on CPU, which library runs the convolutions XLA
  keeps. Other backends get no options.

  XLA:CPU hands convolutions to YNNPACK by default, which runs each of them on a
  single thread on the x86 machines measured; XLA's Eigen convolutions use every
  core. 'eigen' keeps YNNPACK for the matmuls and reductions and gives the
  convolutions to Eigen; so does 'onednn', for the convolutions oneDNN does not
  take (bfloat16, grouped) (docs/performance.md).
  """
  if resolve_convolutions(cpu_convolutions) in ('', 'ynnpack'):
    return {}
  return {'xla_cpu_experimental_ynn_fusion_type':
          'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def jit(fn: Callable[..., Any], cpu_convolutions: str = 'auto', **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` with its convolutions run as `cpu_convolutions` says:
  with 'onednn', fn is traced with squeezejax.onednn enabled."""
  if resolve_convolutions(cpu_convolutions) == 'onednn':
    onednn.register()  # a build error now, not inside a trace
    # Each device's thread gets its share of the cores for oneDNN's OpenMP team.
    fn = onednn.enabled_in(fn, DATA, max(1, cpu_count() // jax.local_device_count()),
                           onednn_dtypes())
  return jax.jit(fn, compiler_options=compiler_options(cpu_convolutions), **jit_kwargs)


def onednn_dtypes() -> tuple[str, ...]:
  """The compute dtypes oneDNN's convolutions take here: bfloat16 too where the CPU
  computes it natively (AVX512-BF16 or AMX); elsewhere XLA keeps bfloat16's."""
  flags = cpu_info()['flags'] or {}
  native = flags.get('avx512_bf16') or flags.get('amx_bf16')
  return ('float32', 'bfloat16') if native else ('float32',)


def run_once_compiler_options() -> dict[str, int | bool]:
  """XLA options for programs that run once, such as the state's initialisation: on
  CPU, LLVM at -O0 and XLA's older loop emitters (no MLIR pipeline per fused kernel).
  Its random draws then compile in a fraction of the time, draw the same bits
  (tests/test_initializers.py) and run about as fast (docs/performance.md)."""
  if jax.default_backend() != 'cpu':
    return {}
  return {'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False}


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def fsdp_sharding(mesh, shape: tuple[int, ...]) -> NamedSharding:
  """Shard the largest dimension divisible by the data axis; replicate otherwise."""
  n = mesh.shape[DATA]
  dims = [d for d in np.argsort(shape)[::-1] if shape[d] % n == 0 and shape[d] >= n]
  if n == 1 or not dims:
    return replicated(mesh)
  spec = [None] * len(shape)
  spec[dims[0]] = DATA
  return NamedSharding(mesh, P(*spec))


def state_shardings(mesh, abstract_tree, fsdp: bool):
  """A sharding for each leaf of an abstract state tree."""
  if not fsdp:
    return jax.tree.map(lambda _: replicated(mesh), abstract_tree)
  return jax.tree.map(lambda x: fsdp_sharding(mesh, x.shape), abstract_tree)


def check_batch(mesh, global_batch: int, name: str = 'batch_size') -> tuple[int, int]:
  """(per-process, per-device) batch; the global batch must split evenly."""
  n_dev, n_proc = mesh.size, jax.process_count()
  if global_batch < 1 or global_batch % n_dev:
    raise UserError(f'{name}={global_batch} does not divide across {n_dev} devices: '
                    f'expected a positive multiple of {n_dev}, or fewer devices '
                    f'(config.num_devices, JAX_NUM_CPU_DEVICES)')
  return global_batch // n_proc, global_batch // n_dev


def process_slice(global_batch: int) -> slice:
  """Rows of the global batch that this process loads."""
  per_process = global_batch // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def global_batch(mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles per-process rows into global arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
