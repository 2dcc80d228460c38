"""oneDNN's convolutions inside XLA:CPU programs (cpu_convolutions='onednn').

XLA:CPU runs convolutions with Eigen or YNNPACK and adds layout transposes around
their kernel gradients; PyTorch's CPU convolutions are oneDNN's. Here each 2-D
convolution, and its data and kernel gradients, is an XLA FFI custom call into
oneDNN (csrc/onednn_conv.cc): NHWC activations and HWIO kernels as they are, no
transposes. docs/performance.md has the measurements.

The handlers are compiled with the system C++ compiler on first use (scripts/setup.sh
does it at install), against the jaxlib and oneDNN installed (the `onednn-cpu-gomp`
and `onednn-devel-cpu-gomp` wheels), and cached under $XDG_CACHE_HOME/squeezejax (or
~/.cache/squeezejax).

A program uses them where it is traced inside `enabled(axis, threads, dtypes)`:
`parallel.jit` does that for cpu_convolutions='onednn', with bfloat16 among the
dtypes where the CPU computes it natively (AVX512-BF16 or AMX). Anything traced outside
(exports, tests of the textbook layers) keeps XLA's own convolutions. Inside a
mesh with the batch axis `axis`, each device convolves its own shard of the batch
(`jax.shard_map`) with an OpenMP team of `threads`, and the kernel gradient is
summed over the axis.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.sharding import PartitionSpec as P

from squeezejax import files
from squeezejax.errors import UserError

SOURCE = 'csrc/onednn_conv.cc'
TARGETS = ('forward', 'forward_bias', 'backward_data', 'backward_weights')


class _Settings(NamedTuple):
  axis: str  # the mesh's batch axis
  threads: int  # OpenMP threads a call
  dtypes: tuple[str, ...]  # the compute dtypes handed to oneDNN


_enabled: contextvars.ContextVar[_Settings | None] = contextvars.ContextVar(
    'squeezejax_onednn', default=None)


@contextlib.contextmanager
def enabled(axis: str, threads: int, dtypes: tuple[str, ...] = ('float32',)):
  """Convolutions traced inside run through oneDNN (where it `supports` them): split
  over the mesh axis `axis` where the mesh has it, `threads` OpenMP threads a call,
  for the compute `dtypes` given ('float32', 'bfloat16')."""
  token = _enabled.set(_Settings(axis, threads, tuple(dtypes)))
  try:
    yield
  finally:
    _enabled.reset(token)


def enabled_in(fn: Callable[..., Any], axis: str, threads: int,
               dtypes: tuple[str, ...] = ('float32',)) -> Callable[..., Any]:
  """fn, traced inside `enabled(axis, threads, dtypes)`."""
  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with enabled(axis, threads, dtypes):
      return fn(*args, **kwargs)
  return traced


def is_enabled() -> bool:
  return _enabled.get() is not None


def installed() -> bool:
  """Whether oneDNN's library and headers are where pip puts the wheels."""
  include, lib = _prefix_dirs()
  return (include / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists() and (lib / 'libdnnl.so').exists()


def supports(dtype, padding, feature_group_count: int = 1, kernel_dilation=1,
             input_dilation=1) -> bool:
  """Enabled for `dtype`, and what the handlers do: one group, no dilation, explicit
  or VALID padding."""
  undilated = all(d == 1 for d in (*np.atleast_1d(kernel_dilation or 1),
                                   *np.atleast_1d(input_dilation or 1)))
  return (is_enabled() and jnp.dtype(dtype).name in _enabled.get().dtypes
          and feature_group_count == 1 and undilated and _explicit(padding) is not None)


def conv(x: jax.Array, kernel: jax.Array, strides, padding,
         bias: jax.Array | None = None) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, strides, padding, ('NHWC', 'HWIO', 'NHWC')),
  plus `bias` where given, traced inside `enabled`."""
  register()
  return _conv(x, kernel, bias, tuple(strides), _explicit(padding))


def _explicit(padding):
  if isinstance(padding, str):
    return ((0, 0), (0, 0)) if padding == 'VALID' else None
  pads = tuple(tuple(int(p) for p in pair) for pair in padding)
  return pads if len(pads) == 2 and all(len(pair) == 2 for pair in pads) else None


# -- the custom calls ---------------------------------------------------------------------


def _out_shape(x_shape, kernel_shape, strides, padding):
  n, h, w, _ = x_shape
  kh, kw, _, features = kernel_shape
  (pt, pb), (pl, pr) = padding
  return (n, (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1,
          features)


def _call(target: str, shapes, *operands, strides, padding):
  """The custom call `target` on `operands` of one dtype, with results of `shapes`."""
  (pt, pb), (pl, pr) = padding
  attrs = dict(sh=strides[0], sw=strides[1], pt=pt, pb=pb, pl=pl, pr=pr,
               threads=_enabled.get().threads)
  results = [jax.ShapeDtypeStruct(shape, operands[0].dtype) for shape in shapes]
  # `sequential`: under jax.vmap (GPU-style stacked seeds) one call per member.
  return jax.ffi.ffi_call(f'squeezejax_conv_{target}', results, vmap_method='sequential')(
      *operands, **{k: np.int64(v) for k, v in attrs.items()})


def _per_device(fn, in_batched: tuple[bool, ...], out_batched: tuple[bool, ...]):
  """fn(*arrays, axis) on each device's shard of the batch axis's mesh (the batched
  arrays split over it, the others whole), or on the whole arrays without one."""
  axis = _enabled.get().axis
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or axis not in mesh.axis_names:
    return functools.partial(fn, axis=None)
  # check_vma=False: the custom calls' results carry no varying-axes type.
  specs = lambda batched: tuple(P(axis) if b else P() for b in batched)
  return jax.shard_map(functools.partial(fn, axis=axis), in_specs=specs(in_batched),
                       out_specs=specs(out_batched), check_vma=False)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv(x, kernel, bias, strides, padding):
  def forward(x, kernel, bias, axis):
    del axis
    shape = _out_shape(x.shape, kernel.shape, strides, padding)
    target, operands = ('forward', (x, kernel)) if bias is None else (
        'forward_bias', (x, kernel, bias))
    return tuple(_call(target, [shape], *operands, strides=strides, padding=padding))
  return _per_device(forward, (True, False, False), (True,))(x, kernel, bias)[0]


def _conv_fwd(x, kernel, bias, strides, padding):
  return _conv(x, kernel, bias, strides, padding), (x, kernel, bias)


def _conv_bwd(strides, padding, residuals, dy):
  def backward(x, kernel, dy, axis):
    # XLA drops the data gradient where nothing uses it (the first layer's).
    geometry = dict(strides=strides, padding=padding)
    [dx] = _call('backward_data', [x.shape], dy, kernel, **geometry)
    [dkernel] = _call('backward_weights', [kernel.shape], x, dy, **geometry)
    return dx, dkernel if axis is None else jax.lax.psum(dkernel, axis)
  x, kernel, bias = residuals
  dx, dkernel = _per_device(backward, (True, False, True), (True, False))(x, kernel, dy)
  # The bias gradient stays XLA's reduction: oneDNN's (diff_bias) was slower on small
  # images (docs/performance.md). Summed in float32 whatever the dtype.
  return dx, dkernel, None if bias is None else jnp.sum(
      dy, axis=(0, 1, 2), dtype=jnp.float32).astype(bias.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def split(vector: jax.Array, sizes) -> list[jax.Array]:
  """`vector` (1-D) cut into consecutive pieces of `sizes`: with the handlers enabled
  one custom call copies them all, where XLA:CPU would compile a kernel per piece (the
  train step cuts its flat parameters into every weight and bias; docs/performance.md)."""
  if not is_enabled() or vector.ndim != 1 or len(sizes) < 2:
    return jnp.split(vector, np.cumsum(sizes)[:-1])
  register()
  return _split(vector, tuple(int(n) for n in sizes))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _split(vector, sizes):
  results = [jax.ShapeDtypeStruct((n,), vector.dtype) for n in sizes]
  return jax.ffi.ffi_call('squeezejax_split', results, vmap_method='sequential')(vector)


_split.defvjp(lambda vector, sizes: (_split(vector, sizes), None),
              lambda sizes, _, pieces: (jnp.concatenate(pieces),))


# -- building and registering the handlers ------------------------------------------------


def _prefix_dirs() -> tuple[Path, Path]:
  data = Path(sysconfig.get_path('data'))  # where wheels' .data/data lands: the venv
  return data / 'include', data / 'lib'


def _cache_dir() -> Path:
  return Path(files.cache_dir('onednn'))


@functools.cache
def register() -> Path:
  """Builds the handlers if needed and registers them with XLA:CPU; returns the library."""
  library = build()
  handle = ctypes.cdll.LoadLibrary(str(library))
  for name in [f'squeezejax_conv_{target}' for target in TARGETS] + ['squeezejax_split']:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(handle, name)), platform='cpu')
  return library


def build() -> Path:
  """The handlers' shared library, compiled once per source, jaxlib and oneDNN."""
  if not installed():
    raise UserError("cpu_convolutions='onednn' needs oneDNN: pip install onednn-cpu-gomp "
                    "onednn-devel-cpu-gomp (Linux x86-64), or use cpu_convolutions=eigen")
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
  if not compiler:
    raise UserError("cpu_convolutions='onednn' compiles its handlers on first use and needs "
                    "a C++ compiler (apt install g++), or use cpu_convolutions=eigen")
  source = resources.files('squeezejax').joinpath(SOURCE).read_bytes()
  include, lib = _prefix_dirs()
  digest = hashlib.sha256(source)
  for part in (jaxlib.__version__, str((lib / 'libdnnl.so').resolve()), compiler):
    digest.update(part.encode())
  target = _cache_dir() / digest.hexdigest()[:16] / 'libsqueezejax_onednn.so'
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    src, out = Path(tmp) / 'onednn_conv.cc', Path(tmp) / target.name
    src.write_bytes(source)
    command = [compiler, '-O2', '-std=c++17', '-shared', '-fPIC', '-fopenmp',
               f'-I{jax.ffi.include_dir()}', f'-I{include}', str(src), f'-L{lib}', '-ldnnl',
               f'-Wl,-rpath,{lib}', '-o', str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
      errors = [line for line in done.stderr.splitlines() if 'error' in line] or ['']
      raise UserError(f'compiling the oneDNN handlers with {compiler} failed: '
                      f'{errors[0].strip()} (or use cpu_convolutions=eigen)')
    os.replace(out, target)  # atomic: a concurrent build finds a whole library or none
  return target
