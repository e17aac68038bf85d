"""MobileNetV3-Small (Howard et al., 2019) as torchvision builds it, written out so the
zoo needs no torchvision: the same module tree, so torchvision's state-dict keys
(`features.4.block.2.fc1.weight`, `classifier.3.bias`, ...) would load unchanged.

What sets it apart from MobileNetV2: hardswish and hardsigmoid activations,
squeeze-and-excitation blocks (a global average pool whose result rescales the
channels: a broadcast multiply), 5x5 depthwise kernels, and a two-layer classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# (input, kernel, expanded, output, squeeze-excite, activation, stride): Table 2 of the
# paper, as torchvision's _mobilenet_v3_conf("mobilenet_v3_small").
SMALL = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
LAST_CHANNEL = 1024


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    """torchvision's Conv2dNormActivation: children 0 (conv), 1 (bn), 2 (activation, if any)."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup, eps=0.001, momentum=0.01),
        ]
        if act is not None:
            layers.append(nn.Hardswish() if act == "HS" else nn.ReLU())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, kernel: int, expanded: int, oup: int, se: bool, act: str, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expanded != inp:
            layers.append(ConvBNAct(inp, expanded, 1, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(ConvBNAct(expanded, oup, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class MobileNetV3(nn.Module):
    def __init__(self, setting=SMALL, last_channel: int = LAST_CHANNEL, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, setting[0][0], 3, 2, act="HS")]
        layers += [InvertedResidual(*row) for row in setting]
        last_out = setting[-1][3]
        layers.append(ConvBNAct(last_out, 6 * last_out, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_out, last_channel), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(last_channel, num_classes),
        )
        self._init_like_torchvision()

    def _init_like_torchvision(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def build_model() -> nn.Module:
    return MobileNetV3()
