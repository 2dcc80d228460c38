"""Where a train step's time goes: `squeezejax bench --profile`.

JAX: `jax.profiler` traces a few steps of the compiled train step; each XLA kernel
event is matched to its HLO instruction and counted by what runs it (a oneDNN or
Eigen convolution, a YNNPACK library fusion, XLA's own loop fusions, copies, the
gradients' all-reduce) and by where it sits in the step (forward, backward, the
optimizer update and the rest: JAX names backward ops `transpose(jvp(...))`; ops
XLA added, such as a weight gradient's layout transpose, name no source op). It
also gives each XLA worker thread's busy share of the traced window. Time in no
kernel event is waiting (between dependent kernels, at the all-reduce, between
steps), except that Eigen's convolutions (cpu_convolutions='eigen') run as tasks
with no event of their own: profile with 'ynnpack' to see convolutions by name.

PyTorch: `torch.profiler` over the same number of steps, each op's self time
grouped the same way. PyTorch's self times are wall time on the calling thread
(an op's intra-op threads count once); JAX's are summed over its threads and
divided by the number of cores. Both are per step, and both come with the profiler's
own overhead, so they rank costs; the timed windows give the speeds.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
from typing import Any

import jax

from squeezejax.errors import UserError

INSTRUCTION = re.compile(r'\s+(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z\-]+)\(')
CALLS = re.compile(r'calls=%?([\w.\-]+)')
OP_NAME = re.compile(r'op_name="([^"]*)"')


def check_steps(steps: int) -> None:
  """A one-line error for a bad `--profile` (0 is off)."""
  if steps < 0:
    raise UserError(f'--profile={steps} is not allowed: expected 0 (off) or a number of '
                    'steps >= 1')
  if steps and jax.default_backend() != 'cpu':  # it reads XLA:CPU's worker threads
    raise UserError(f'--profile reads XLA:CPU traces; on {jax.default_backend()} use '
                    'jax.profiler.trace and XProf instead')


def _hlo_kernels(hlo_text: str) -> dict[str, tuple[str, str]]:
  """Instruction name (what a kernel event is called) -> (what runs it, phase)."""
  opcodes: dict[str, set[str]] = collections.defaultdict(set)  # computation -> opcodes
  instructions = []
  computation = None
  for line in hlo_text.splitlines():
    if not line.startswith(' ') and line.endswith('{'):  # a computation's header
      computation = line.removeprefix('ENTRY ').lstrip('%').split(' ')[0]
    elif computation and (m := INSTRUCTION.match(line)):
      opcodes[computation].add(m.group(2))
      instructions.append((m.group(1), m.group(2), line))
  kernels = {}
  for name, opcode, line in instructions:
    calls = CALLS.search(line)
    called = opcodes[calls.group(1)] if calls else set()
    if opcode == 'fusion' and 'kind=kCustom' in line:
      what = next((f'{op} (library fusion)' for op in ('convolution', 'dot') if op in called),
                  'reduce (library fusion)')
    elif opcode == 'fusion':
      what = ('transpose/copy (XLA loop)' if name.startswith(('transpose', 'copy'))
              else 'elementwise (XLA loop)')
    elif opcode == 'custom-call' and 'squeezejax_conv' in line:
      what = 'convolution (oneDNN)'  # squeezejax.onednn's custom calls
    elif opcode in ('convolution', 'dot', 'all-reduce', 'concatenate', 'copy'):
      what = opcode
    else:
      what = 'other'
    op_name = OP_NAME.search(line)
    phase = ('no source op' if op_name is None
             else 'backward' if 'transpose(jvp' in op_name.group(1)
             else 'forward' if 'jvp(' in op_name.group(1) else 'update and other')
    kernels[name] = (what, phase)
  return kernels


def _busy(intervals: list[tuple[int, int]]) -> int:
  """Nanoseconds covered by the union of (start, stop) intervals."""
  busy, begin, end = 0, 0, 0
  for start, stop in sorted(intervals):
    if start > end:
      busy, begin = busy + end - begin, start
    end = max(end, stop)
  return busy + end - begin


def profile_jax(compiled, run, steps: int, cores: int) -> dict[str, Any]:
  """Profile `run(steps)` (calls of the `compiled` executable, synchronised at the end)
  on a machine with `cores` cores: kernel times are per core."""
  kernels = _hlo_kernels(compiled.as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    try:
      jax.block_until_ready(run(steps))
    finally:
      jax.profiler.stop_trace()
    path, = glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
  ms = collections.Counter()
  threads = {}
  for plane in data.planes:
    for line in plane.lines:
      intervals = []
      for event in line.events:
        if event.name in kernels:
          ms[kernels[event.name]] += event.duration_ns / 1e6
          intervals.append((event.start_ns, event.start_ns + event.duration_ns))
      if intervals and 'Eigen' in line.name:  # XLA:CPU's worker pool, a thread per core
        threads[line.name] = intervals
  everything = [i for t in threads.values() for i in t] or [(0, 1)]
  span = max(s for _, s in everything) - min(s for s, _ in everything)
  return {'ms_per_step': {f'{what} | {phase}': v / steps / cores
                          for (what, phase), v in sorted(ms.items())},
          'cores': cores,
          'busy_share': [round(_busy(t) / span, 3) for t in threads.values()],
          'traced_ms_per_step': span / 1e6 / steps}


TORCH_GROUPS = (('convolution', ('convolution',)), ('matmul', ('addmm', 'mm', 'linear')),
                ('max pool', ('max_pool',)), ('relu', ('relu', 'threshold', 'clamp')),
                ('dropout', ('bernoulli', 'dropout')), ('concatenate', ('cat',)),
                ('optimizer', ('optimizer', 'sgd', '_foreach')))


def profile_torch(run, steps: int) -> dict[str, Any]:
  """Profile `run(steps)`, a PyTorch train step, by op groups (self time per step)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    run(steps).item()
  ms = collections.Counter()
  for event in prof.key_averages():
    name = event.key.lower()
    group = next((g for g, keys in TORCH_GROUPS if any(k in name for k in keys)), 'other')
    ms[group] += event.self_cpu_time_total / 1e3 / steps
  return {'ms_per_step': dict(sorted(ms.items()))}


def profile_case(jax_case, torch_case, steps: int, cores: int) -> dict[str, Any]:
  """A bench case's profile: its JAX train step and, if given, a PyTorch one."""
  return {'jax': profile_jax(jax_case.train_step, jax_case.train, steps, cores),
          'torch': profile_torch(torch_case.train, steps) if torch_case else None,
          'torch_config': torch_case.config if torch_case else None}


def table(result: dict[str, Any]) -> str:
  """Markdown of a bench result's profile: JAX's kernels by library and phase, then
  PyTorch's ops by group."""
  jax_profile, torch_profile = result['profile']['jax'], result['profile']['torch']
  label = (f'{result["model"]} {result["image_size"]} px, batch {result["batch_size"]}, '
           f'{result["cpu_convolutions"] or result["device_kind"]}; PyTorch '
           f'{result["profile"]["torch_config"] or "not run"}')
  rows = [f'### {label}', '',
          'JAX: XLA worker threads busy '
          + ', '.join(f'{b:.0%}' for b in jax_profile['busy_share'])
          + f' of the traced window ({jax_profile["traced_ms_per_step"]:.1f} ms per step '
          'under the profiler)', '',
          '| JAX: what runs it | phase | ms per step (per core) |', '|---|---|--:|']
  jax_ms = jax_profile['ms_per_step']
  for key, value in sorted(jax_ms.items(), key=lambda kv: -kv[1]):
    what, phase = key.split(' | ')
    rows.append(f'| {what} | {phase} | {value:.1f} |')
  kernels = sum(jax_ms.values())
  rows.append(f'| **all kernels** | | **{kernels:.1f}** |')
  # Eigen's convolutions run as tasks on the same threads without kernel events of
  # their own: with cpu_convolutions='eigen' their work is counted here.
  rows.append(f'| no kernel event (waiting, and Eigen convolutions) | | '
              f'{jax_profile["traced_ms_per_step"] - kernels:.1f} |')
  if torch_profile:
    rows += ['', '| PyTorch: op group | ms per step (self, wall) |', '|---|--:|']
    torch_ms = torch_profile['ms_per_step']
    for group, value in sorted(torch_ms.items(), key=lambda kv: -kv[1]):
      rows.append(f'| {group} | {value:.1f} |')
    rows.append(f'| **all ops** | **{sum(torch_ms.values()):.1f}** |')
  return '\n'.join(rows)
