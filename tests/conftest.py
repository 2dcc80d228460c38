"""Test set-up: 8 fake CPU devices before JAX starts, TensorFlow kept off accelerators.

Compiling dominates the suite's time, so the test processes and their subprocesses
share one persistent XLA compilation cache and compile with LLVM optimisation level 0
(the same programs and numerics, slower code: the suite checks numbers, not speed).
"""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '')
os.environ['XLA_FLAGS'] += (' --xla_force_host_platform_device_count=8'
                            ' --xla_backend_optimization_level=0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'squeezejax-tests-xla-cache'))

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
