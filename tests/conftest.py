"""Test set-up: 8 fake CPU devices before JAX starts, TensorFlow kept off accelerators."""

import os

os.environ.setdefault('XLA_FLAGS', '')
os.environ['XLA_FLAGS'] += ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
