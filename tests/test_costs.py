from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgepack.compress.evaluate import cost
from edgepack.devices.costs import count_macs, model_costs
from edgepack.devices.reference_models import (mobilenet_v1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_large_075,
                                               mobilenet_v3_large_minimalistic, mobilenet_v3_small, mobilenet_v3_small_075,
                                               mobilenet_v3_small_minimalistic)
from standard_nets import efficientnet_b0, mobilenet_v2_sample, resnet18

# Published MAC figures are rounded to two or three digits: 3 % covers the rounding and
# nothing more (skipping MobileNetV2's depthwise convs, 7 % of its MACs, would miss it).
PUBLISHED_TOLERANCE = 0.03


def _close(value, published):
    return abs(value - published) <= PUBLISHED_TOLERANCE * published


@pytest.mark.parametrize("build, published_macs, published_params", [
    # The figures torchvision's model documentation lists for its ImageNet weights
    # (its "GFLOPS" are multiply-adds, as in both papers: 300 M and 1.8e9).
    (mobilenet_v2, 0.30e9, 3_504_872),
    (mobilenet_v2_sample, 0.30e9, 3_504_872),
    (resnet18, 1.81e9, 11_689_512),
    # The papers' tables (Howard et al. 2017, table 8: 569 M mult-adds, 4.2 M parameters;
    # Howard et al. 2019, table 3: 219 M and 56 M) with torchvision's exact parameters.
    (mobilenet_v1, 569e6, 4.2e6),
    (mobilenet_v3_large, 219e6, 5_483_032),
    (mobilenet_v3_small, 56e6, 2_542_856),
    # Tan & Le 2019, table 2: 0.39 B FLOPs (multiply-adds), 5.3 M parameters; the
    # efficientnet_pytorch port's B0 has 5,288,548. Its convolutions are Conv2d
    # subclasses padding in forward, its squeeze-excite pools functionally.
    (efficientnet_b0, 0.39e9, 5_288_548),
])
def test_model_costs_match_published_figures_of_nested_standard_nets(build, published_macs, published_params):
    torch.manual_seed(0)
    model = build().eval()
    example = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    costs = model_costs(model, example)
    assert _close(costs.macs, published_macs), costs
    assert _close(costs.parameters, published_params), costs
    table = cost(model, example)
    assert table["macs"] == costs.macs and table["parameters"] == costs.parameters


# TensorFlow's slim MobileNetV3 checkpoints (tensorflow/models at 0ba83cf0,
# research/slim/nets/mobilenet/README.md, "Mobilenet V3 Imagenet Checkpoints": MACs (M),
# Params (M)), the architectures whose TF-Lite timings the latency fit is validated on.
# Two of the Small figures are not reproduced by slim's own definition (mobilenet_v3.py):
# Small dm=0.75's 2.4 M parameters (2.04 M counted) and Small minimalistic's 65 M MACs
# (52.3 M counted); those are None here. The same README's Small dm=1 figures (66 M,
# 2.9 M) disagree with the paper's Table 3 (56 M) and torchvision's 2,542,856
# parameters that the test above checks Small against; every Large figure agrees.
@pytest.mark.parametrize("build, published_macs, published_params", [
    (mobilenet_v3_large_075, 155e6, 4.0e6),
    (mobilenet_v3_small_075, 44e6, None),
    (mobilenet_v3_large_minimalistic, 209e6, 3.9e6),
    (mobilenet_v3_small_minimalistic, None, 2.0e6),
])
def test_model_costs_match_the_slim_mobilenet_v3_checkpoint_table(build, published_macs, published_params):
    torch.manual_seed(0)
    example = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    costs = model_costs(build().eval(), example)
    assert published_macs is None or _close(costs.macs, published_macs), costs
    assert published_params is None or _close(costs.parameters, published_params), costs


class _SamePadConv(nn.Conv2d):
    """The same-padding convolution of EfficientNet ports: a Conv2d subclass that holds a
    padding child module and calls F.conv2d itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = nn.ZeroPad2d(1) if self.kernel_size[0] == 3 else nn.Identity()

    def forward(self, x):
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def test_model_costs_counts_a_conv_subclass_with_children_and_depthwise_groups():
    model = nn.Sequential(_SamePadConv(8, 8, 3, groups=8, bias=False), _SamePadConv(8, 16, 1)).eval()
    costs = model_costs(model, np.zeros((2, 8, 10, 10), np.float32))
    depthwise = 2 * 8 * 10 * 10 * (8 // 8) * 3 * 3
    pointwise = 2 * 16 * 10 * 10 * 8
    assert costs.macs == depthwise + pointwise
    assert costs.activation_elements == 2 * 8 * 100 + 2 * 8 * 100 + 2 * 16 * 100


class _Attention(nn.Module):
    """Functional matmuls in forward code, a Linear on [N, T, C] and a Linear called twice."""

    def __init__(self, dim=16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.randn(dim, dim))

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.matmul(q, k.transpose(1, 2)).softmax(-1)
        y = self.proj(self.proj(att @ v))
        return F.linear(y, self.gate)


def test_count_macs_counts_functional_matmuls_leading_dims_and_each_call():
    n, t, c = 2, 5, 16
    macs = count_macs(_Attention(c).eval(), torch.zeros(n, t, c))
    qkv = n * t * 3 * c * c
    scores = n * t * t * c
    mix = n * t * t * c
    proj_twice = 2 * n * t * c * c
    gate = n * t * c * c
    assert macs == qkv + scores + mix + proj_twice + gate


def test_model_costs_counts_macs_of_a_torchscript_module():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 10)).eval())
    costs = model_costs(scripted, np.zeros((1, 3, 8, 8), np.float32))
    assert costs.macs == 4 * 36 * 3 * 9 + 10 * 4 * 36
    assert costs.parameters == sum(p.numel() for p in scripted.parameters())


def test_model_costs_counts_a_torchscript_module_nested_in_a_python_one():
    """Hooks cannot be put on the scripted child; the operator-level count still sees it."""
    model = nn.Sequential(torch.jit.script(nn.Conv2d(3, 4, 3, groups=1)), nn.Flatten(), nn.Linear(4 * 36, 10)).eval()
    costs = model_costs(model, np.zeros((1, 3, 8, 8), np.float32))
    assert costs.macs == 4 * 36 * 3 * 9 + 10 * 4 * 36
    assert costs.parameters == 4 * 3 * 9 + 4 + 10 * 4 * 36 + 10
