"""The PyTorch twin of a squeezejax network, for parity tests and the benchmark.

`SqueezeNet(spec)` builds any `SqueezeNetSpec` with the module tree of torchvision's
`torchvision/models/squeezenet.py` (torchvision itself cannot be installed here):

    features   = Sequential(conv1, ReLU, MaxPool, Fire, ... with a MaxPool after
                            each fire in spec.pool_after; ceil-mode pools)
    classifier = Sequential(Dropout, conv10, ReLU (if spec.conv10_relu), AdaptiveAvgPool2d)

so torchvision's own architectures (the squeezenet1_0 / squeezenet1_1 presets) get
exactly its state_dict keys (`features.K.squeeze.weight`, ...) and initialisation,
and every other spec gets the keys of `convert.torch_shapes(spec)`. NCHW float32
images in, logits out. Only this file (and tests, benchmarks) imports torch; it is
an optional extra.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from squeezejax import convert
from squeezejax import spec as spec_lib


class Fire(nn.Module):
  """torchvision's Fire with squeezejax's options (see squeezejax.model.FireModule): an
  expand branch with 0 filters is not built, and a bypass adds the input ('simple') or
  relu(bypass_conv(input)) ('complex') to the output, with no ReLU after the add."""

  def __init__(self, dims: spec_lib.FireDims):
    super().__init__()
    self.bypass = dims.bypass
    self.squeeze = nn.Conv2d(dims.in_channels, dims.s1x1, kernel_size=1)
    self.squeeze_activation = nn.ReLU(inplace=True)
    self.expand1x1 = self.expand3x3 = None
    if dims.e1x1:
      self.expand1x1 = nn.Conv2d(dims.s1x1, dims.e1x1, kernel_size=1)
      self.expand1x1_activation = nn.ReLU(inplace=True)
    if dims.e3x3:
      self.expand3x3 = nn.Conv2d(dims.s1x1, dims.e3x3, kernel_size=3, padding=1)
      self.expand3x3_activation = nn.ReLU(inplace=True)
    if dims.bypass == 'complex':  # after the expands: torchvision's order of the others
      self.bypass_conv = nn.Conv2d(dims.in_channels, dims.out_channels, kernel_size=1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    s = self.squeeze_activation(self.squeeze(x))
    branches = []
    if self.expand1x1 is not None:
      branches.append(self.expand1x1_activation(self.expand1x1(s)))
    if self.expand3x3 is not None:
      branches.append(self.expand3x3_activation(self.expand3x3(s)))
    y = branches[0] if len(branches) == 1 else torch.cat(branches, 1)
    if self.bypass == 'simple':
      y = y + x
    elif self.bypass == 'complex':
      y = y + torch.relu(self.bypass_conv(x))
    return y


def _pool() -> nn.Module:
  return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(nn.Module):
  """The network of `spec` in torchvision's module tree, with torchvision's initialisation
  (kaiming_uniform, conv10 N(0, 0.01), zero biases) whatever `spec.init` says."""

  def __init__(self, spec: spec_lib.SqueezeNetSpec):
    super().__init__()
    self.num_classes = spec.num_classes
    c1 = spec.conv1
    layers = [nn.Conv2d(spec.in_channels, c1.filters, kernel_size=c1.kernel, stride=c1.stride,
                        padding=c1.padding), nn.ReLU(inplace=True), _pool()]
    for i, dims in enumerate(spec.fires()):
      layers.append(Fire(dims))
      if i in spec.pool_after:
        layers.append(_pool())
    self.features = nn.Sequential(*layers)
    # Built in torchvision's order, so that torch.manual_seed gives its weights.
    final_conv = nn.Conv2d(spec.fires()[-1].out_channels, spec.num_classes, kernel_size=1)
    self.classifier = nn.Sequential(
        nn.Dropout(p=spec.dropout_rate), final_conv,
        *([nn.ReLU(inplace=True)] if spec.conv10_relu else []), nn.AdaptiveAvgPool2d((1, 1)))
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        if m is final_conv:
          nn.init.normal_(m.weight, mean=0.0, std=0.01)
        else:
          nn.init.kaiming_uniform_(m.weight)
        nn.init.constant_(m.bias, 0)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet(version: str = '1_0', num_classes: int = 1000) -> SqueezeNet:
  """torchvision.models.squeezenet1_0 / squeezenet1_1 (untrained), NCHW in, logits out."""
  return SqueezeNet(convert.torchvision_spec(version, num_classes))


def from_params(spec: spec_lib.SqueezeNetSpec, params) -> SqueezeNet:
  """The twin of `spec` holding squeezejax parameters (a pure dict, HWIO kernels)."""
  state_dict = convert.to_torch_state_dict(spec, params)
  module = SqueezeNet(spec)
  module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
  return module


class AlexNet(nn.Module):
  """torchvision's `alexnet` module tree (torchvision/models/alexnet.py), PyTorch's
  default initialisation; the `alexnet` preset's twin."""

  def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def alexnet_from_params(spec, params) -> AlexNet:
  """The torchvision AlexNet holding squeezejax parameters of the `alexnet` preset."""
  from squeezejax import convert_alexnet  # pylint: disable=g-import-not-at-top
  state_dict = convert_alexnet.to_torchvision(spec, params)
  module = AlexNet(spec.num_classes, spec.dropout_rate)
  module.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
  return module


class TrainStep:
  """A PyTorch train step of `spec` holding squeezejax `params`: zero_grad, forward,
  cross-entropy, backward, SGD (momentum, weight decay) step, on NHWC `images` given
  as NCHW tensors. `config`: 'eager' (NCHW), 'channels_last' (model and images in
  torch.channels_last memory) or 'compile' (torch.compile of forward and loss).
  `dtype` 'bfloat16' computes forward and loss under torch.autocast (parameters stay
  float32, as squeezejax's `dtype` does). `warmup_steps` run at once (torch.compile
  compiles in the first); their losses are kept in `losses`."""

  def __init__(self, spec, params: dict, images: np.ndarray, labels: np.ndarray,
               config: str = 'eager', *, lr: float = 1e-3, momentum: float = 0.9,
               weight_decay: float = 0.0, threads: int = 0, warmup_steps: int = 2,
               dtype: str = 'float32'):
    if threads:
      torch.set_num_threads(threads)
    self.config = config
    self.module = from_params(spec, params).train()
    self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    if config == 'channels_last':
      self.module = self.module.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.labels = torch.from_numpy(labels.astype(np.int64))
    module = self.module

    def loss(images, labels):
      with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
        return torch.nn.functional.cross_entropy(module(images), labels)

    if config == 'compile':
      # Every step's `loss` is the same code object: without a reset Dynamo counts a
      # new network as a recompile and, past its limit, silently runs it eagerly.
      torch.compiler.reset()
      loss = torch.compile(loss)
    self.loss = loss
    self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr, momentum=momentum,
                                     weight_decay=weight_decay)
    self.losses = [self.train(1).item() for _ in range(warmup_steps)]

  def train(self, steps: int):
    loss = None
    for _ in range(steps):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.loss(self.images, self.labels)
      loss.backward()
      self.optimizer.step()
    return loss
