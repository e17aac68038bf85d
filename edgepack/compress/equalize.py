"""Cross-layer equalization (CLE): rescale the channels between two consecutive layers so
that each channel's weight range is the same in both, without changing what the model
computes (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization and
Bias Correction", section 4.1).

For a layer pair a -> [ReLU] -> b, output channel i of a is divided by s_i and input
channel i of b multiplied by it: ReLU(x / s) = ReLU(x) / s for s > 0, so b's output is
unchanged. s_i = sqrt(r_a,i / r_b,i) (r: the channel's largest absolute weight) leaves
both ranges at sqrt(r_a,i * r_b,i). Chains (expand -> depthwise -> project) are swept
until the scales settle. BatchNorm is folded into its layer first (passes.reorganize).

ReLU6 is not positive-homogeneous: scaling its input by 1/s moves its clip from 6 to 6/s.
As in the paper, a ReLU6 between two equalized layers is replaced by ReLU first, which
changes the model wherever an activation exceeded 6. The paper replaces every one; here
only those whose input never exceeded 6 on the calibration data are (the function is then
unchanged on data like it), and a pair around a ReLU6 that did clip is left alone. On
MobileNetV2 with torchvision's weights, 5 of 35 ReLU6 clip on the sample's calibration
photos; replacing all 34 between pairs drops the float model's own logit SNR to 25 dB
(almost all of it from one layer, features.1.conv.0.2, whose inputs reach 14), while
leaving that one alone keeps it above 50 dB. The report lists what was kept
(`relu6_kept`), and the build measures the float change (`fp32_max_abs_change`,
`fp32_snr_db` against the model before any rewrite).

Written here rather than taken from a library: nncf 3.4 installs next to torch 2.13,
but its channel alignment (its CLE) has an OpenVINO backend only, and its bias
correction runs inside nncf.quantize against nncf's own quantizers, not on a float model
the three exporters can take; aimet-torch 2.42 would replace the pinned torch 2.13 (with
torch 2.14 and the CUDA libraries); torch's `torch.ao.quantization._equalize` is private,
deprecated with torch.ao.quantization, and cannot take a depthwise convolution as the second layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Sweeps over all pairs; a chain of three layers settles in a few, and a sweep stops the
# loop once no scale moves by more than 0.1 %.
MAX_SWEEPS = 50
SETTLED = 1e-3


@dataclass(frozen=True)
class Pair:
    first: str              # module names, as in model.named_modules()
    second: str
    relu6: str | None       # a ReLU6 module between them, replaced by ReLU


def equalize(model, example, calibration=None) -> tuple[object, dict]:
    """(a rewritten copy of `model`, the report). `example`: one input tensor;
    `calibration`: inputs [N, ...] that decide which ReLU6 may become ReLU (without them,
    every one between a pair does, as in the paper)."""
    import copy

    import torch
    from torch import nn

    from edgepack.passes.reorganize import fold_batchnorms

    # Models arrive in eval mode; an exported program's module() refuses eval() itself.
    model = copy.deepcopy(model)
    graph = _trace(model)
    folded = fold_batchnorms(model, graph, example)
    pairs = find_pairs(model, _trace(model))
    clipping = _clipping_relu6(model, {p.relu6 for p in pairs if p.relu6}, calibration)
    kept = sorted(clipping)
    pairs = [p for p in pairs if p.relu6 not in clipping]
    for p in pairs:
        if p.relu6:
            _set(model, p.relu6, nn.ReLU())
    modules = dict(model.named_modules())
    sweeps = 0
    with torch.no_grad():
        for sweeps in range(1, MAX_SWEEPS + 1):
            moved = max((_equalize_pair(modules[p.first], modules[p.second]) for p in pairs), default=0.0)
            if moved < SETTLED:
                break
    report = {"pairs": len(pairs), "batchnorms_folded": len(folded), "relu6_replaced": sum(1 for p in pairs if p.relu6),
              "relu6_kept": kept, "sweeps": sweeps, "layers": [[p.first, p.second] for p in pairs]}
    return model, report


def _clipping_relu6(model, names: set, calibration, *, batch: int = 32, samples: int = 256) -> set:
    """The ReLU6 modules among `names` whose input exceeded 6 on the calibration inputs."""
    import numpy as np
    import torch

    if calibration is None or not names:
        return set()
    peak: dict[str, float] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(
        lambda mod, i, o, n=n: peak.__setitem__(n, max(peak.get(n, -np.inf), float(i[0].max())))) for n in names]
    try:
        with torch.no_grad():
            for start in range(0, min(len(calibration), samples), batch):
                model(torch.as_tensor(np.ascontiguousarray(calibration[start : start + batch]), dtype=torch.float32))
    finally:
        for h in handles:
            h.remove()
    return {n for n, v in peak.items() if v > 6.0}


def find_pairs(model, graph) -> list[Pair]:
    """Consecutive Conv/Linear layers a -> b joined only through modules that commute with
    a positive per-channel scale (ReLU, ReLU6 (to be replaced), Identity, Dropout), where
    nothing else reads a's output and each layer is called once. b is a full convolution
    or linear layer, or a depthwise convolution (its input channel i is its output channel
    i); a grouped convolution of any other kind is left alone."""
    import torch
    from torch import nn

    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def layer(node) -> nn.Module | None:
        if node.op != "call_module" or calls.get(node.target) != 1:
            return None
        m = modules[node.target]
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and (m.groups == 1 or _depthwise(m))):
            return m
        return None

    passthrough = (nn.Identity, nn.Dropout, nn.ReLU)
    pairs = []
    for node in graph.nodes:
        a = layer(node)
        if a is None:
            continue
        relu6, cur = None, node
        while True:
            if len(cur.users) != 1:
                break
            nxt = next(iter(cur.users))
            if _functional_relu(nxt):
                cur = nxt
                continue
            if nxt.op != "call_module" or calls.get(nxt.target) != 1:
                break
            m = modules[nxt.target]
            if isinstance(m, nn.ReLU6) and relu6 is None:
                relu6, cur = nxt.target, nxt
                continue
            if isinstance(m, passthrough):
                cur = nxt
                continue
            b = layer(nxt)
            if b is not None and type(a) is type(b) and _channels_out(a) == _channels_in(b):
                pairs.append(Pair(node.target, nxt.target, relu6))
            break
    return pairs


def _functional_relu(node) -> bool:
    import torch

    return ((node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu))
            or (node.op == "call_method" and node.target == "relu"))


def _depthwise(conv) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _channels_out(m) -> int:
    return m.out_features if hasattr(m, "out_features") else m.out_channels


def _channels_in(m) -> int:
    return m.in_features if hasattr(m, "in_features") else m.in_channels


def _out_range(m):
    """Largest absolute weight of each output channel."""
    return m.weight.detach().abs().flatten(1).amax(1)


def _in_range(m):
    """Largest absolute weight of each input channel (a depthwise conv's are its outputs')."""
    w = m.weight.detach().abs()
    if getattr(m, "groups", 1) > 1:
        return w.flatten(1).amax(1)
    return w.transpose(0, 1).flatten(1).amax(1)


def _equalize_pair(a, b) -> float:
    """Rescale the channels between a and b in place; returns the largest |log s|."""
    import torch

    ra, rb = _out_range(a), _in_range(b)
    ok = (ra > 0) & (rb > 0)
    s = torch.where(ok, torch.sqrt(ra / torch.where(ok, rb, 1.0)), torch.ones_like(ra))
    shape_a = (-1,) + (1,) * (a.weight.dim() - 1)
    a.weight.div_(s.reshape(shape_a))
    if a.bias is not None:
        a.bias.div_(s)
    if getattr(b, "groups", 1) > 1:
        b.weight.mul_(s.reshape((-1,) + (1,) * (b.weight.dim() - 1)))
    else:
        b.weight.mul_(s.reshape((1, -1) + (1,) * (b.weight.dim() - 2)))
    return float(s.log().abs().max()) if s.numel() else 0.0


def weight_range_spread(model, names) -> float:
    """The geometric mean, over the given layers, of max/min of their output channels'
    weight ranges: what equalization lowers (1.0 = every channel spans the same range)."""
    modules = dict(model.named_modules())
    logs = []
    for n in names:
        r = _out_range(modules[n])
        r = r[r > 0]
        if r.numel():
            logs.append(math.log(float(r.max() / r.min())))
    return math.exp(sum(logs) / len(logs)) if logs else 1.0


def _trace(model):
    import torch.fx

    from edgepack.errors import ToolchainError

    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception as e:  # fx raises many types on data-dependent control flow
        raise ToolchainError(f"equalize: torch.fx cannot trace the model ({type(e).__name__}: {str(e)[:200]}); "
                             "set equalize = false in the quantize stage for this model", stage="equalize") from e


def _set(model, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
