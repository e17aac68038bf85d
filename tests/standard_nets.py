"""Standard architectures written in plain torch (torchvision pins another torch), built
the way the code people actually ship builds them, for testing passes and cost counts
against published figures:

- ResNet-18 (He et al. 2016): residual adds, a 1x1 downsample branch, Identity shortcuts.
- EfficientNet-B0 (Tan & Le 2019) as the widely used `efficientnet_pytorch` port writes
  it: Conv2d subclasses padding "same" in forward through a ZeroPad2d or an Identity
  child, squeeze-excite with functional pooling and sigmoid, a swish written as a custom
  autograd Function, blocks in a ModuleList iterated in forward, drop-connect in
  training only.
- MobileNetV2/V3 from edgepack.devices.reference_models (depthwise convs, squeeze-excite
  with Hardsigmoid, residual adds) and the MobileNetV2 sample's torchvision-shaped one.

Weights are random; a dense layer's cost and a graph's structure do not depend on values.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from conftest import REPO, load_sample_module
from edgepack.devices.reference_models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small

# --------------------------------------------------------------------------- ResNet-18


class _BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.down(x))


def resnet18(*, in_channels: int = 3, num_classes: int = 1000, width: int = 64) -> nn.Module:
    """ResNet-18; `width` scales every stage (64 is the paper's)."""
    stages, cin = [], width
    for mult, stride in [(1, 1), (2, 2), (4, 2), (8, 2)]:
        cout = width * mult
        stages.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)))
        cin = cout
    return nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, num_classes))


# --------------------------------------------------------------------------- EfficientNet-B0


class _SwishFunction(torch.autograd.Function):
    """x * sigmoid(x) recomputing sigmoid in backward instead of storing it, as the
    efficientnet_pytorch port does to save training memory."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


class MemoryEfficientSwish(nn.Module):
    def forward(self, x):
        return _SwishFunction.apply(x)


class Conv2dStaticSamePadding(nn.Conv2d):
    """TensorFlow's "same" padding for a fixed input size: the (possibly asymmetric) pad
    is a ZeroPad2d child, or an Identity child when none is needed, that forward calls
    before F.conv2d."""

    def __init__(self, cin, cout, kernel_size, stride=1, *, image_size: int, **kwargs):
        super().__init__(cin, cout, kernel_size, stride, **kwargs)
        self.stride = self.stride if len(self.stride) == 2 else [self.stride[0]] * 2
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(image_size / sh), math.ceil(image_size / sw)
        pad_h = max((oh - 1) * sh + (kh - 1) * self.dilation[0] + 1 - image_size, 0)
        pad_w = max((ow - 1) * sw + (kw - 1) * self.dilation[1] + 1 - image_size, 0)
        if pad_h > 0 or pad_w > 0:
            self.static_padding = nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        else:
            self.static_padding = nn.Identity()

    def forward(self, x):
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _drop_connect(x, p: float, training: bool):
    if not training:
        return x
    keep = 1 - p
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


class MBConvBlock(nn.Module):
    def __init__(self, *, cin: int, cout: int, kernel: int, stride: int, expand: int, image_size: int,
                 se_ratio: float = 0.25):
        super().__init__()
        self.expand, self.stride, self.cin, self.cout = expand, stride, cin, cout
        hidden = cin * expand
        bn = dict(momentum=0.01, eps=1e-3)
        if expand != 1:
            self._expand_conv = Conv2dStaticSamePadding(cin, hidden, 1, image_size=image_size, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **bn)
        self._depthwise_conv = Conv2dStaticSamePadding(hidden, hidden, kernel, stride, groups=hidden,
                                                       image_size=image_size, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, **bn)
        squeezed = max(1, int(cin * se_ratio))
        self._se_reduce = Conv2dStaticSamePadding(hidden, squeezed, 1, image_size=1)
        self._se_expand = Conv2dStaticSamePadding(squeezed, hidden, 1, image_size=1)
        out_size = math.ceil(image_size / stride)
        self._project_conv = Conv2dStaticSamePadding(hidden, cout, 1, image_size=out_size, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **bn)
        self._swish = MemoryEfficientSwish()

    def forward(self, inputs, drop_connect_rate=None):
        x = inputs
        if self.expand != 1:
            x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        squeezed = self._se_expand(self._swish(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = torch.sigmoid(squeezed) * x
        x = self._bn2(self._project_conv(x))
        if self.stride == 1 and self.cin == self.cout:
            if drop_connect_rate:
                x = _drop_connect(x, drop_connect_rate, self.training)
            x = x + inputs
        return x


# (repeats, kernel, stride, expansion, input, output) of the seven stages, Tan & Le 2019, Table 1.
B0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
             (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class EfficientNet(nn.Module):
    def __init__(self, *, image_size: int = 224, in_channels: int = 3, num_classes: int = 1000,
                 drop_connect_rate: float = 0.2, dropout: float = 0.2):
        super().__init__()
        self.drop_connect_rate = drop_connect_rate
        bn = dict(momentum=0.01, eps=1e-3)
        self._conv_stem = Conv2dStaticSamePadding(in_channels, 32, 3, 2, image_size=image_size, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **bn)
        size = math.ceil(image_size / 2)
        self._blocks = nn.ModuleList()
        for repeats, kernel, stride, expand, cin, cout in B0_STAGES:
            for i in range(repeats):
                self._blocks.append(MBConvBlock(cin=cin if i == 0 else cout, cout=cout, kernel=kernel,
                                                stride=stride if i == 0 else 1, expand=expand, image_size=size))
                size = math.ceil(size / (stride if i == 0 else 1))
        self._conv_head = Conv2dStaticSamePadding(320, 1280, 1, image_size=size, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **bn)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self._swish = MemoryEfficientSwish()

    def forward(self, inputs):
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            rate = self.drop_connect_rate * idx / len(self._blocks)
            x = block(x, drop_connect_rate=rate)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(start_dim=1)))


def efficientnet_b0(**kwargs) -> nn.Module:
    return EfficientNet(**kwargs)


# --------------------------------------------------------------------------- MobileNetV2 sample


def mobilenet_v2_sample() -> nn.Module:
    """The MobileNetV2 sample's own model (torchvision's module tree, Dropout in the
    classifier, functional pooling in forward)."""
    return load_sample_module(REPO / "samples" / "mobilenet_v2", "model").build_model()


STANDARD_NETS = {
    "resnet18": resnet18,
    "efficientnet_b0": efficientnet_b0,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_sample": mobilenet_v2_sample,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
}
