"""Empirical bias correction (Nagel et al., 2019, section 4.2): rounding a layer's weights
to int8 shifts the mean of its outputs, per channel, and the next layers inherit the
shift. Measured on calibration data, the shift is subtracted from the layer's bias.

Layers are corrected in the order the model calls them, in one pass: the layers before
one are already weight-quantized and corrected when its shift is measured, so each
correction also takes up what is left of the shifts upstream. Weights are rounded the way
every exporter here rounds them (symmetric int8 in [-127, 127], per output channel or per
tensor), so the correction matches the artifacts. Activations stay float: what is
corrected is the weights' error, as in the paper.

Written here for the reasons given in compress/equalize.py (no maintained library applies
it to a float torch model that the three exporters then take).
"""

from __future__ import annotations

# The calibration inputs one correction pass sees at once. A layer's shift must be known
# before the next layer's is measured, so the pass cannot be split into batches; this
# bounds its memory (128 MobileNetV2 inputs at 224x224: about 2 GB of peak activations).
MAX_SAMPLES = 128


def fake_quantize_weight(w, *, per_channel: bool):
    """`w` rounded to symmetric int8 and back to float."""
    import torch

    if per_channel:
        scale = w.detach().abs().flatten(1).amax(1).clamp(min=1e-12) / 127.0
        scale = scale.reshape((-1,) + (1,) * (w.dim() - 1))
    else:
        scale = w.detach().abs().max().clamp(min=1e-12) / 127.0
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


def output_channel_means(layer, y):
    """Mean of each output channel of `layer`'s output `y`: dim 1 of a convolution's
    [N, C, ...], the last dim of a linear layer's [..., C]."""
    from torch import nn

    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1]).mean(0)
    return y.transpose(0, 1).flatten(1).mean(1)


def correct_biases(model, calibration, *, per_channel: bool, skip: tuple[str, ...] = ()) -> tuple[object, dict]:
    """(a copy of `model` with corrected biases, the report). `calibration`: a float array
    [N, ...]; `skip`: module names left alone (kept in float, so never rounded)."""
    import copy

    import numpy as np
    import torch
    from torch import nn

    # Models arrive in eval mode; an exported program's module() refuses eval() itself.
    model = copy.deepcopy(model)
    x = torch.as_tensor(np.ascontiguousarray(calibration[:MAX_SAMPLES]), dtype=torch.float32)
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    layers = {n: m for n, m in model.named_modules()
              if isinstance(m, kinds) and not any(n == s or n.startswith(s + ".") for s in skip)}

    # The float model's per-channel output means.
    reference: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, i, y, n=n: reference.__setitem__(n, output_channel_means(mod, y)))
               for n, m in layers.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()

    # The same pass with rounded weights, correcting each layer as it is reached.
    quantized = copy.deepcopy(model)
    q_layers = dict(quantized.named_modules())
    shifts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for n in layers:
            q = q_layers[n]
            q.weight.copy_(fake_quantize_weight(q.weight, per_channel=per_channel))
            if q.bias is None:
                q.bias = nn.Parameter(torch.zeros(_channels(q)))

    def correct(mod, i, y, n):
        if n not in reference or n in shifts:
            return None   # called twice: the first call's correction stands
        shift = output_channel_means(mod, y) - reference[n]
        shifts[n] = shift
        mod.bias.sub_(shift)
        view = (1, -1) + (1,) * (y.dim() - 2) if not isinstance(mod, nn.Linear) else (-1,)
        return y - shift.reshape(view)

    handles = [q_layers[n].register_forward_hook(lambda mod, i, y, n=n: correct(mod, i, y, n)) for n in layers]
    try:
        with torch.no_grad():
            quantized(x)
    finally:
        for h in handles:
            h.remove()

    with torch.no_grad():
        for n, shift in shifts.items():
            m = layers[n]
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros(_channels(m)))
            m.bias.sub_(shift)
    sizes = [float(s.abs().mean()) for s in shifts.values()]
    report = {"layers": len(shifts), "samples": int(len(x)),
              "mean_abs_shift": round(sum(sizes) / len(sizes), 8) if sizes else 0.0,
              "max_abs_shift": round(max((float(s.abs().max()) for s in shifts.values()), default=0.0), 8)}
    return model, report


def _channels(m) -> int:
    return m.out_features if hasattr(m, "out_features") else m.out_channels
