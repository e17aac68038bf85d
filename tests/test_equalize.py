"""Cross-layer equalization keeps what the float model computes and evens out its channels'
weight ranges; bias correction removes the output shift that rounding weights to int8
causes. Real modules, real arithmetic: a small random depthwise net and the digits model."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DIGITS, load_sample_module
from edgepack.compress.bias_correction import correct_biases, fake_quantize_weight, output_channel_means
from edgepack.compress.equalize import equalize, weight_range_spread
from edgepack.passes.reorganize import fold_batchnorms

# Equalization only rescales: on the same inputs the outputs may differ by float rounding.
RELATIVE_TOLERANCE = 1e-4


class DepthwiseNet(nn.Module):
    """conv -> BN -> ReLU -> depthwise -> BN -> ReLU6 -> pointwise -> BN -> ReLU -> pool -> linear:
    the layer pattern of a MobileNet block, with channel scales spread over two decades."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.expand = nn.Conv2d(3, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU()
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.ReLU6()
        self.project = nn.Conv2d(16, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.act3 = nn.ReLU()
        self.head = nn.Linear(8, 4)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                    spread = 10 ** (torch.rand(m.weight.shape[0], generator=g) * 2 - 1)
                    m.weight.mul_(spread.reshape((-1,) + (1,) * (m.weight.dim() - 1)))
                if isinstance(m, nn.BatchNorm2d):
                    c = m.num_features
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        self.eval()

    def forward(self, x):
        x = self.act1(self.bn1(self.expand(x)))
        x = self.act2(self.bn2(self.depthwise(x)))
        x = self.act3(self.bn3(self.project(x)))
        return self.head(x.mean((2, 3)))


def _inputs(n: int, scale: float, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * scale


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def test_equalize_keeps_the_function_of_a_depthwise_net_and_evens_its_weight_ranges():
    model = DepthwiseNet()
    x = _inputs(64, 0.05)   # small inputs: the ReLU6 never clips, so it may become ReLU
    eq, report = equalize(model, x[:1], x.numpy())
    with torch.no_grad():
        diff = _relative_difference(model(x), eq(x))
    assert diff < RELATIVE_TOLERANCE, diff
    # expand -> depthwise -> project; project reaches the head through a mean, not a pass-through.
    assert report["pairs"] == 2 and report["batchnorms_folded"] == 3
    assert report["relu6_replaced"] == 1 and report["relu6_kept"] == []
    assert isinstance(eq.act2, nn.ReLU)
    layers = ["expand", "depthwise", "project"]
    reference = copy.deepcopy(model)   # the same BatchNorm folding, without the rescaling
    fold_batchnorms(reference, torch.fx.symbolic_trace(reference).graph, x[:1])
    before, after = weight_range_spread(reference, layers), weight_range_spread(eq, layers)
    # Measured: 100x -> 30x (max/min channel range, geometric mean over the three layers; the
    # last one, project, has no partner after it and keeps its spread).
    assert after < before / 3, (before, after)


def test_equalize_leaves_a_relu6_that_clips_and_its_pair_alone():
    model = DepthwiseNet()
    x = _inputs(64, 30.0)   # large inputs drive the depthwise outputs past 6
    eq, report = equalize(model, x[:1], x.numpy())
    assert report["relu6_kept"] == ["act2"] and report["relu6_replaced"] == 0
    assert report["layers"] == [["expand", "depthwise"]]   # depthwise -> project would scale act2's clip
    assert isinstance(eq.act2, nn.ReLU6)
    with torch.no_grad():
        assert _relative_difference(model(x), eq(x)) < RELATIVE_TOLERANCE


def test_equalize_keeps_the_digits_model_on_real_inputs():
    model = load_sample_module(DIGITS, "model").build_model()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(DIGITS / "weights" / "digits.safetensors")))
    model.eval()
    x, _ = load_sample_module(DIGITS, "data").evaluation()
    x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    eq, report = equalize(model, x[:1], x.numpy())
    with torch.no_grad():
        diff = _relative_difference(model(x), eq(x))
    assert diff < RELATIVE_TOLERANCE, diff
    # conv -> conv (through BN and ReLU), and linear -> linear (through ReLU and Dropout);
    # the second conv reaches the third through MaxPool, which is not a pass-through.
    assert report["pairs"] == 2 and report["layers"] == [["features.0", "features.3"], ["classifier.1", "classifier.4"]]


def _channel_means(model, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Per-channel means of `layer`'s output when `model` runs on `x`."""
    got = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda mod, i, y: got.__setitem__("y", output_channel_means(mod, y)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return got["y"]


def _shift_of_quantized(model, layer: str, x: torch.Tensor, reference_means: torch.Tensor) -> float:
    """Mean |per-channel output mean shift| at `layer` of `model` with int8-rounded weights,
    against the float model's means."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for m in quantized.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(fake_quantize_weight(m.weight, per_channel=False))
    return float((_channel_means(quantized, layer, x) - reference_means).abs().mean())


@pytest.mark.parametrize("layer", ["project", "head"])
def test_bias_correction_removes_the_output_shift_of_rounded_weights(layer):
    model = DepthwiseNet()
    x = _inputs(128, 0.5)
    reference = _channel_means(model, layer, x)
    corrected, report = correct_biases(model, x.numpy(), per_channel=False)
    before = _shift_of_quantized(model, layer, x, reference)
    after = _shift_of_quantized(corrected, layer, x, reference)
    assert report["layers"] == 4 and report["samples"] == 128
    # Measured: 0.056 -> 1.2e-7 at project, 0.32 -> 1.9e-6 at head (float rounding).
    assert before > 1e-3 and after < before / 100, (before, after)


def test_bias_correction_skips_layers_kept_in_float():
    model = DepthwiseNet()
    corrected, report = correct_biases(model, _inputs(16, 0.5).numpy(), per_channel=True, skip=("head",))
    assert report["layers"] == 3
    assert torch.equal(corrected.head.bias, model.head.bias)
