r"""A sampled design space (pycls): no bypass vs simple bypass over the same sampled networks.

  squeezejax sweep --config=experiments/design_space_bypass.py:quick --workdir=runs/ds_bypass

Instead of one network per macro-architecture (Table 3), N SqueezeNets are drawn from
distributions over the metaparameters and each is trained twice, with bypass none and
with bypass simple, so the two design spaces are compared by their error distributions
(EDFs with bootstrap bands, KS distance) and by the mean error difference, paired model
by model. The space: squeeze ratio SR log-uniform in [0.125, 1], pct_3x3 uniform in
[0.01, 0.99], base_e integer in [16, 48], incr_e integer in [0, 48], freq integer in
[1, 4]. A drawn network is kept only if both variants are valid (a simple bypass needs
equal input and output channels, which rejects odd freq unless incr_e is 0) and have at
most MAX_PARAMS parameters, both by the closed-form cost, before anything trains.
Sampling is seeded (SAMPLE_SEED): the same file gives the same points on any machine.

Presets (the argument after the colon):
  quick  real Fashion-MNIST, small layout, 2 x 40 models of at most 250k parameters,
         150 steps of batch 128 each (0.32 epochs: a short budget per model, a design
         space's ranking rather than converged accuracy).
  cpu    real Fashion-MNIST, 2 x 100 models, 1,000 steps each.
  test   synthetic data, a tiny network, 2 x 3 models (the test suite).
"""

import os

from squeezejax import configs
from squeezejax import design_space as ds

_HERE = os.path.dirname(os.path.abspath(__file__))
SPACE = {
    'squeeze_ratio': ds.LogUniform(0.125, 1.0),
    'pct_3x3': ds.Uniform(0.01, 0.99),
    'base_e': ds.IntRange(16, 48),
    'incr_e': ds.IntRange(0, 48),
    'freq': ds.IntRange(1, 4),
}
CROSS = {'bypass': ('none', 'simple')}
MODELS = {'quick': 40, 'cpu': 100, 'test': 3}
STEPS = {'quick': 150, 'cpu': 1000}
MAX_PARAMS = 250_000
SAMPLE_SEED = 0
DATASET = {'fashion_mnist': (10, 1, 28), 'synthetic': (10, 3, 16)}  # classes, channels, px


def get_config(arg: str = 'quick'):
  if arg not in MODELS:
    raise ValueError(f'unknown preset {arg!r}: expected one of {", ".join(MODELS)}')
  fig3a = configs.load_module(os.path.join(_HERE, 'fig3a_squeeze_ratio.py'))
  c = fig3a.design_space_config('quick' if arg != 'test' else 'test')
  if arg in STEPS:
    c.total_steps = STEPS[arg]
    c.warmup_steps = STEPS[arg] // 4
    c.checkpoint_every = STEPS[arg]  # one checkpoint a model: a short run restarts cheaply
    c.log_every = 100
  return c


def models(arg: str = 'quick') -> list[dict]:
  """The sampled metaparameters (each trained once per bypass)."""
  c = get_config(arg)
  classes, channels, size = DATASET[c.dataset]
  base = {**configs.spec_fields(c), 'num_classes': classes, 'in_channels': channels}
  return ds.sample(SPACE, MODELS[arg], SAMPLE_SEED, base=base, image_size=c.image_size or size,
                   cross=CROSS, max_params=MAX_PARAMS)


def get_sweep(arg: str = 'quick') -> list[dict]:
  return ds.overrides(models(arg), CROSS)


def get_report(arg: str = 'quick') -> dict:
  return {
      'design_space': {'compare': 'bypass'},
      'figure': 'design_space_bypass.png',
      'title': f'bypass none vs simple over {MODELS.get(arg, "?")} sampled SqueezeNets',
      'caption': f'{ds.describe(SPACE)}; at most {MAX_PARAMS:,} parameters',
      'margin': 0.005,
      'claims': [
          dict(claim='simple bypass beats none (over the sampled design space)',
               test='greater', a={'bypass': 'none'}, b={'bypass': 'simple'}),
      ],
  }
