"""What one inference of a PyTorch model costs, independent of any runtime: multiply-
accumulates and activation elements. Inputs to latency estimates (devices/estimate.py)
and a sanity check on instruction counts (MACs per instruction)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCosts:
    macs: int                   # multiply-accumulates of convolutions and linear layers
    activation_elements: int    # the input plus every conv/linear/pool output, batch as declared
    parameters: int

    def as_dict(self) -> dict:
        return {"macs": self.macs, "activation_elements": self.activation_elements, "parameters": self.parameters}


def model_costs(module, example: np.ndarray) -> ModelCosts:
    """Run `example` through `module` once, counting at every leaf module. Activations are
    counted where a deployed graph materialises them: after convolutions, linear layers
    and pooling. BatchNorm and activations fold or fuse into the convolution before them
    in every exporter, so counting their outputs would count one tensor three times."""
    import torch
    from torch import nn

    materialised = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    macs = 0
    elements = int(np.prod(example.shape))

    def hook(mod, inputs, output):
        nonlocal macs, elements
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            macs += output.numel() * k
        elif isinstance(mod, nn.Linear):
            macs += output.numel() * mod.in_features
        if isinstance(mod, materialised) and isinstance(output, torch.Tensor):
            elements += output.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            module(torch.as_tensor(np.asarray(example, dtype=np.float32)))  # models arrive in eval mode
    finally:
        for h in handles:
            h.remove()
    return ModelCosts(int(macs), int(elements), int(sum(p.numel() for p in module.parameters())))
