"""The MobileNets of the published latency tables (XNNPACK's v1, v2, v3-Large and
v3-Small; the slim MobileNetV3 checkpoints' v3-Large and v3-Small, also at width 0.75,
and the minimalistic v3-Large and v3-Small; all at 224x224, 1000 classes), written in
plain torch so their instruction counts can be measured with edgepack's own exporters
and runners, and so that the standard mobile ops (hard-swish, squeeze-excite with a
hard-sigmoid gate, residual adds) are exported at full size (bench/mobilenet_v3_int8.py).

Weights are random: XNNPACK's figures were measured with randomized weights too (XNNPACK
README, "Performance"; the slim table times the trained checkpoints), and a dense
kernel's work does not depend on values. The layer tables follow the papers (Howard et
al. 2017; Sandler et al. 2018; Howard et al. 2019, Tables 1 and 2) as torchvision
arranges them; torchvision itself is not a dependency (its wheels pin another torch).
The width-0.75 and minimalistic v3 follow TensorFlow's slim mobilenet_v3.py (V3_LARGE,
V3_SMALL at depth_multiplier 0.75; V3_LARGE_MINIMALISTIC, V3_SMALL_MINIMALISTIC), with
1000 classes where slim has 1001.
"""

from __future__ import annotations

from torch import nn

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
          "mobilenet_v3_large_075", "mobilenet_v3_small_075",
          "mobilenet_v3_large_minimalistic", "mobilenet_v3_small_minimalistic")
INPUT_SHAPE = (1, 3, 224, 224)


def _divisible(v: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of 8, never more than 10 % below `v` (the papers' rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    layers = [nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(oup)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


# --------------------------------------------------------------------------- v1


def mobilenet_v1() -> nn.Module:
    # (output channels, stride) of each depthwise-separable block, Howard et al. 2017, Table 1.
    blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5, (1024, 2), (1024, 1))
    layers, c = [_conv(3, 32, 3, 2)], 32
    for out, stride in blocks:
        layers += [_conv(c, c, 3, stride, groups=c), _conv(c, out, 1)]
        c = out
    return _Classifier(nn.Sequential(*layers), nn.Linear(1024, 1000))


# --------------------------------------------------------------------------- v2


class _InvertedResidualV2(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        layers = [] if expand == 1 else [_conv(inp, hidden, 1)]
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, oup, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == oup

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2() -> nn.Module:
    # (expansion, output channels, repeats, first stride), Sandler et al. 2018, Table 2.
    setting = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    layers, c = [_conv(3, 32, 3, 2)], 32
    for t, out, n, s in setting:
        for i in range(n):
            layers.append(_InvertedResidualV2(c, out, s if i == 0 else 1, t))
            c = out
    layers.append(_conv(c, 1280, 1))
    return _Classifier(nn.Sequential(*layers), nn.Linear(1280, 1000))


# --------------------------------------------------------------------------- v3
#
# Module tree, BatchNorm settings, dropout and initialisation as torchvision's
# mobilenetv3.py, so its state-dict keys (`features.4.block.2.fc1.weight`,
# `classifier.3.bias`, ...) and its ImageNet weights load unchanged, and a model built
# here with random weights starts where torchvision's untrained one does.


def _bn_v3(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


def _conv_v3(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = nn.Hardswish) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: children 0 (conv), 1 (bn), 2 (activation)."""
    layers = [nn.Conv2d(inp, oup, k, stride, (k - 1) // 2, groups=groups, bias=False), _bn_v3(oup)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: a global average, two 1x1 convolutions and a hard-sigmoid gate
    that scales the input (Hu et al. 2018, with Howard et al. 2019's hard sigmoid)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class InvertedResidualV3(nn.Module):
    def __init__(self, inp: int, k: int, hidden: int, oup: int, se: bool, act: type[nn.Module], stride: int):
        super().__init__()
        layers = [] if hidden == inp else [_conv_v3(inp, hidden, 1, act=act)]
        layers.append(_conv_v3(hidden, hidden, k, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, _divisible(hidden // 4)))
        layers.append(_conv_v3(hidden, oup, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == oup

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


RE, HS = nn.ReLU, nn.Hardswish
# (input, kernel, expanded, output, squeeze-excite, activation, stride), Howard et al. 2019, Tables 1 and 2.
V3_LARGE = (
    (16, 3, 16, 16, False, RE, 1), (16, 3, 64, 24, False, RE, 2), (24, 3, 72, 24, False, RE, 1),
    (24, 5, 72, 40, True, RE, 2), (40, 5, 120, 40, True, RE, 1), (40, 5, 120, 40, True, RE, 1),
    (40, 3, 240, 80, False, HS, 2), (80, 3, 200, 80, False, HS, 1), (80, 3, 184, 80, False, HS, 1),
    (80, 3, 184, 80, False, HS, 1), (80, 3, 480, 112, True, HS, 1), (112, 3, 672, 112, True, HS, 1),
    (112, 5, 672, 160, True, HS, 2), (160, 5, 960, 160, True, HS, 1), (160, 5, 960, 160, True, HS, 1),
)
V3_SMALL = (
    (16, 3, 16, 16, True, RE, 2), (16, 3, 72, 24, False, RE, 2), (24, 3, 88, 24, False, RE, 1),
    (24, 5, 96, 40, True, HS, 2), (40, 5, 240, 40, True, HS, 1), (40, 5, 240, 40, True, HS, 1),
    (40, 5, 120, 48, True, HS, 1), (48, 5, 144, 48, True, HS, 1), (48, 5, 288, 96, True, HS, 2),
    (96, 5, 576, 96, True, HS, 1), (96, 5, 576, 96, True, HS, 1),
)


def scaled(setting, multiplier: float):
    """A v3 layer table at a width multiplier, as TensorFlow's slim mobilenet_v3.py builds
    it (the definition of the published dm=0.75 checkpoints): every block's output
    channels times `multiplier`, rounded to a multiple of 8 (_divisible); its expansion
    the block's expansion factor (expanded / input of the full-width table) times the
    already rounded input, rounded again (slim's expand_input_by_factor)."""
    out, c = [], _divisible(setting[0][0] * multiplier)
    for inp, k, hidden, oup, se, act, stride in setting:
        o = _divisible(oup * multiplier)
        out.append((c, k, _divisible(c * hidden / inp), o, se, act, stride))
        c = o
    return tuple(out)


def minimalistic(setting):
    """slim's minimalistic v3 (V3_LARGE_MINIMALISTIC, V3_SMALL_MINIMALISTIC): the same
    channels and strides, no squeeze-excite, ReLU for hard-swish, 3x3 for 5x5 depthwise."""
    return tuple((inp, 3, hidden, oup, False, RE, stride) for inp, _, hidden, oup, _, _, stride in setting)


class MobileNetV3(nn.Module):
    def __init__(self, setting, last_channel: int, num_classes: int = 1000, dropout: float = 0.2, stem: int = 16,
                 act: type[nn.Module] = HS):
        """`act`: the stem's, last convolution's and classifier's activation (hard-swish;
        ReLU in the minimalistic models). The last convolution has 6x the last block's
        output channels (960 = 6 x 160, 576 = 6 x 96; scaled with the table)."""
        super().__init__()
        layers = [_conv_v3(3, stem, 3, 2, act=act)]
        layers += [InvertedResidualV3(*row) for row in setting]
        c = setting[-1][3]
        layers.append(_conv_v3(c, 6 * c, 1, act=act))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * c, last_channel), act(), nn.Dropout(dropout),
                                        nn.Linear(last_channel, num_classes))
        for m in self.modules():   # torchvision's initialisation
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

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def mobilenet_v3_large() -> nn.Module:
    return MobileNetV3(V3_LARGE, 1280)


def mobilenet_v3_small() -> nn.Module:
    return MobileNetV3(V3_SMALL, 1024)


# At width 0.75 the last convolution is scaled with the table (6 x 120 = 720, 6 x 72 =
# 432) and the classifier's hidden layer kept at 1280 and 1024: slim's
# finegrain_classification_mode, as tf.keras' MobileNetV3 does for alpha <= 1. The
# published 4.0 M parameters of Large dm=0.75 are reached only this way (3.99 M; with the
# hidden layer scaled to 960, 3.44 M).

def mobilenet_v3_large_075() -> nn.Module:
    return MobileNetV3(scaled(V3_LARGE, 0.75), 1280, stem=_divisible(16 * 0.75))


def mobilenet_v3_small_075() -> nn.Module:
    return MobileNetV3(scaled(V3_SMALL, 0.75), 1024, stem=_divisible(16 * 0.75))


def mobilenet_v3_large_minimalistic() -> nn.Module:
    return MobileNetV3(minimalistic(V3_LARGE), 1280, act=RE)


def mobilenet_v3_small_minimalistic() -> nn.Module:
    return MobileNetV3(minimalistic(V3_SMALL), 1024, act=RE)


def build(name: str, *, seed: int = 0) -> nn.Module:
    """The named architecture with seeded random weights, in eval mode."""
    import torch

    if name not in MODELS:
        raise ValueError(f"unknown reference model {name!r}; valid: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return globals()[name]().eval()
