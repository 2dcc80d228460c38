"""squeezejax: SqueezeNet fire-module design spaces in JAX (spec, cost, training, sweeps, reuse)."""

__version__ = '0.1.0'
