"""parallel.configure_host (in fresh processes: it must run before JAX starts), the
automatic batch_splits that depends on the device count it gives, and the pacing of
loops of steps (parallel.RunAhead)."""

import json
import os
import subprocess
import sys

import pytest

from squeezejax import configs, parallel, step

CONFIG = os.path.join(os.path.dirname(__file__), '..', 'experiments', 'fashion_mnist.py')

# A 64 MiB temporary per call, allocated by XLA:CPU on a worker thread; the median
# number of minor page faults of a call. No configure_host, no devices set: glibc
# maps and unmaps the temporary on every call.
PROBE = """
import json, resource, sys
from squeezejax import parallel
applied = parallel.configure_host() if sys.argv[1] == 'configure' else None
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jax.lax.optimization_barrier(jnp.cos(x) * 2)[::-1].sum())
x = jnp.arange(2**24, dtype=jnp.float32)
def page_faults(call):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  call()
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
per_call = [page_faults(lambda: f(x).block_until_ready()) for _ in range(24)]
faults = sorted(per_call[12:])[6]  # the median of the last 12: the heap grows at first
print(json.dumps({'applied': applied, 'devices': jax.device_count(), 'faults': faults}))
"""


def probe(mode: str, **env) -> dict:
  clean = {k: v for k, v in os.environ.items()
           if k not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES', 'GLIBC_TUNABLES')
           and not k.startswith('MALLOC_')}
  out = subprocess.run([sys.executable, '-c', PROBE, mode],
                       env={**clean, 'JAX_PLATFORMS': 'cpu', **env},
                       capture_output=True, text=True, timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc, Linux cores')
def test_configure_host_gives_a_device_per_core_and_keeps_freed_memory():
  cores = len(os.sched_getaffinity(0))
  expected = min(1 << (cores.bit_length() - 1), parallel.MAX_AUTO_CPU_DEVICES)
  plain, configured = probe('plain'), probe('configure')
  assert plain['devices'] == 1 and plain['faults'] > 10_000  # 64 MiB = 16,384 pages
  assert configured['applied'] == {'cpu_devices': expected, 'malloc_reuse': True,
                                   'collective_timeout_s': parallel.CPU_COLLECTIVE_TIMEOUT_S}
  assert configured['devices'] == expected
  assert configured['faults'] < 1_000


def test_configure_host_keeps_the_users_choices():
  out = probe('configure', JAX_NUM_CPU_DEVICES='3', MALLOC_ARENA_MAX='4',
              XLA_FLAGS='--xla_cpu_collective_timeout_seconds=60')
  assert out['applied'] == {'cpu_devices': None, 'malloc_reuse': False,
                            'collective_timeout_s': None}
  assert out['devices'] == 3


def test_automatic_batch_splits_follow_the_device_count():
  # The test process has 8 fake CPU devices; meshes of 1 and 2 of them.
  config = configs.load(f'{CONFIG}:test', {'batch_size': '32', 'batch_splits': '0'})
  assert step.batch_splits(config, parallel.make_mesh(1)) == 4  # one device, 32 images
  assert step.batch_splits(config, parallel.make_mesh(2)) == 1  # a device per core
  config.batch_splits = 2
  assert step.batch_splits(config, parallel.make_mesh(2)) == 2  # explicit wins


def test_configure_host_leaves_accelerator_processes_alone():
  out = subprocess.run(
      [sys.executable, '-c', 'from squeezejax import parallel; print(parallel.configure_host())'],
      env={**os.environ, 'JAX_PLATFORMS': 'cuda'}, capture_output=True, text=True, timeout=60,
      check=True)
  assert out.stdout.strip() == (
      "{'cpu_devices': None, 'malloc_reuse': False, 'collective_timeout_s': None}")


# Device 0 computes for a few seconds before the all-reduce; device 1 waits for it.
LATE_DEVICE = """
import sys
from squeezejax import parallel
parallel.CPU_COLLECTIVE_TIMEOUT_S = int(sys.argv[1])
parallel.configure_host()
import jax, jax.numpy as jnp
from jax.sharding import PartitionSpec as P
mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))
def heavy(x):
  m = jax.lax.fori_loop(0, 3000, lambda i, m: jnp.tanh(m @ m), jnp.full((512, 512), 1e-3))
  return x + m[0, :1]
step = lambda x: jax.lax.psum(jax.lax.cond(jax.lax.axis_index('data') == 0, heavy,
                                           lambda v: v, x), 'data')
f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=P('data'), out_specs=P()))
print(f(jax.device_put(jnp.arange(2.0), jax.NamedSharding(mesh, P('data')))))
"""


def on_two_cpu_devices(script: str, arg: str, **env) -> subprocess.CompletedProcess:
  """`script arg` in a fresh process on 2 CPU devices, without the caller's XLA_FLAGS."""
  clean = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, '-c', script, arg], capture_output=True, text=True,
                        timeout=300, env={**clean, 'JAX_NUM_CPU_DEVICES': '2',
                                          'JAX_PLATFORMS': 'cpu', **env})


def aborted_as_stuck(out: subprocess.CompletedProcess) -> bool:
  """XLA:CPU's SIGABRT for a collective past its terminate timeout."""
  return out.returncode in (-6, 134) and 'Termination timeout' in out.stderr


def test_the_collective_timeout_is_what_configure_host_sets():
  """A device thread late for the gradient all-reduce aborts XLA:CPU after the timeout
  (40 s by default: under load, a SIGABRT mid-run); configure_host sets it."""
  assert aborted_as_stuck(on_two_cpu_devices(LATE_DEVICE, '1'))
  assert on_two_cpu_devices(LATE_DEVICE, str(parallel.CPU_COLLECTIVE_TIMEOUT_S)).returncode == 0


# A data-parallel step that never syncs, on 2 CPU devices with XLA:CPU's client pool
# at 2 threads (as on a 2-core machine).
UNSYNCED_LOOP = """
import sys
from squeezejax import parallel
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((2,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))
@jax.jit
def step(w, x):
  g = jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w)
  return w - 1e-3 * g, jnp.sum(g)
w = jax.device_put(jnp.ones((256, 256)), NamedSharding(mesh, P()))
x = jax.device_put(jnp.ones((64, 256)), NamedSharding(mesh, P('data')))
run_ahead = parallel.RunAhead() if sys.argv[1] == 'paced' else None
for _ in range(3000):
  w, loss = step(w, x)
  if run_ahead:
    run_ahead.add(loss)
print(float(loss))
"""


def test_run_ahead_keeps_an_unsynced_data_parallel_loop_from_deadlocking():
  """Unpaced, XLA:CPU's launches of a multi-device program wait on the per-device cap
  of programs in flight inside the client pool that must run them: the loop deadlocks
  (XLA then aborts it). `parallel.RunAhead`, which the train and eval loops use, keeps
  it running."""
  run = lambda mode, stuck_s: on_two_cpu_devices(
      UNSYNCED_LOOP, mode, PJRT_NPROC='2',
      XLA_FLAGS=' '.join(f'--{flag}={stuck_s}' for flag in parallel.CPU_COLLECTIVE_FLAGS))
  paced = run('paced', 120)
  assert paced.returncode == 0, paced.stderr[-2000:]
  unpaced = run('unpaced', 4)  # if this passes, XLA:CPU is fixed and RunAhead may go
  assert aborted_as_stuck(unpaced), (unpaced.returncode, unpaced.stderr[-2000:])
