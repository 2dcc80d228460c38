"""torchvision's SqueezeNet 1_0 / 1_1 in PyTorch, for parity tests and benchmarks.

torchvision cannot be installed here, so this restates `torchvision/models/
squeezenet.py` layer for layer: the same module tree (hence the same state_dict
keys, `features.K.squeeze.weight` ...), ceil-mode pools, ReLU after conv10 and
the same initialisation. It takes NCHW float32 images and returns logits.
Only this file (and tests, benchmarks) imports torch; it is an optional extra.
"""

from __future__ import annotations

import torch
from torch import nn

VERSIONS = ('1_0', '1_1')


class Fire(nn.Module):

  def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
               expand3x3_planes: int):
    super().__init__()
    self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
    self.squeeze_activation = nn.ReLU(inplace=True)
    self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
    self.expand1x1_activation = nn.ReLU(inplace=True)
    self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
    self.expand3x3_activation = nn.ReLU(inplace=True)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.squeeze_activation(self.squeeze(x))
    return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                      self.expand3x3_activation(self.expand3x3(x))], 1)


def _pool() -> nn.Module:
  return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


class SqueezeNet(nn.Module):

  def __init__(self, version: str = '1_0', num_classes: int = 1000, dropout: float = 0.5):
    super().__init__()
    self.num_classes = num_classes
    if version == '1_0':
      self.features = nn.Sequential(
          nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), _pool(),
          Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), _pool(),
          Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
          Fire(384, 64, 256, 256), _pool(),
          Fire(512, 64, 256, 256))
    elif version == '1_1':
      self.features = nn.Sequential(
          nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), _pool(),
          Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), _pool(),
          Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), _pool(),
          Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
          Fire(512, 64, 256, 256))
    else:
      raise ValueError(f'version={version!r} is not allowed: expected one of {VERSIONS}')
    final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
    self.classifier = nn.Sequential(
        nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        if m is final_conv:
          nn.init.normal_(m.weight, mean=0.0, std=0.01)
        else:
          nn.init.kaiming_uniform_(m.weight)
        if m.bias is not None:
          nn.init.constant_(m.bias, 0)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.features(x)
    x = self.classifier(x)
    return torch.flatten(x, 1)


def squeezenet(version: str = '1_0', num_classes: int = 1000) -> SqueezeNet:
  """torchvision.models.squeezenet1_0 / squeezenet1_1 (untrained), NCHW in, logits out."""
  return SqueezeNet(version, num_classes)
