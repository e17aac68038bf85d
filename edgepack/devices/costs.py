"""What one inference of a PyTorch model costs, independent of any runtime: multiply-
accumulates and activation elements. Inputs to latency estimates (devices/estimate.py),
the stage table's MACs column (compress/evaluate.py) and a sanity check on instruction
counts (MACs per instruction)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCosts:
    macs: int                   # multiply-accumulates of convolutions, linear layers and matmuls
    activation_elements: int    # the input plus every conv/linear/pool output, batch as declared
    parameters: int

    def as_dict(self) -> dict:
        return {"macs": self.macs, "activation_elements": self.activation_elements, "parameters": self.parameters}


def count_macs(module, example) -> int:
    """Multiply-accumulates of one forward pass on `example` (a numpy array or tensor, or
    a tuple of them: one per input)."""
    import torch

    with _MacCounter() as counter, torch.no_grad():
        module(*_as_tensors(example))
    return counter.macs


def model_costs(module, example: np.ndarray) -> ModelCosts:
    """Run `example` through `module` once, counting MACs at the operator level and
    activations at every leaf module. Activations are counted where a deployed graph
    materialises them: after convolutions, linear layers and pooling. BatchNorm and
    activations fold or fuse into the convolution before them in every exporter, so
    counting their outputs would count one tensor three times. A Keras or ONNX source
    (sources.foreign) counts the same from its own layers."""
    from edgepack.sources.foreign import is_foreign

    if is_foreign(module):
        return module.costs(example)
    import torch
    from torch import nn

    materialised = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    elements = int(sum(np.prod(t.shape) for t in _as_tensors(example)))

    def hook(mod, inputs, output):
        nonlocal elements
        if isinstance(output, torch.Tensor):
            elements += output.numel()

    # TorchScript modules take no Python hooks; their MACs are still counted below, only
    # their activations are not.
    leaves = [m for m in module.modules()
              if isinstance(m, materialised) and not isinstance(m, torch.jit.ScriptModule)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with _MacCounter() as counter, torch.no_grad():
            module(*_as_tensors(example))  # models arrive in eval mode
    finally:
        for h in handles:
            h.remove()
    return ModelCosts(int(counter.macs), int(elements), int(sum(p.numel() for p in module.parameters())))


def _as_tensors(example) -> tuple:
    """One tensor per input; a float array stays float32, integer inputs keep their dtype."""
    import torch

    def one(x):
        if isinstance(x, torch.Tensor):
            return x
        x = np.asarray(x)
        return torch.as_tensor(x if not np.issubdtype(x.dtype, np.floating) else x.astype(np.float32))

    return tuple(one(x) for x in example) if isinstance(example, tuple) else (one(example),)


class _MacCounter:
    """Counts at the ATen operator level with torch's own FLOP counter
    (torch.utils.flop_counter), not with hooks on module types: a hook sees only modules of
    known classes, so it misses convolutions in a subclass that overrides forward (same-
    padding convs), F.conv2d/F.linear/torch.matmul written in forward code (attention,
    squeeze-excite), and a type-keyed table misses subclasses altogether. At the operator
    level every convolution, mm, bmm and attention is seen once per call, whatever module
    or function issued it, grouped convolutions are costed by their weight shape
    (out_elements * in_channels/groups * kh * kw), and TorchScript modules are covered."""

    def __enter__(self):
        from torch.utils.flop_counter import FlopCounterMode

        self._mode = FlopCounterMode(display=False)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    @property
    def macs(self) -> int:
        # The FLOP counter counts a multiply-accumulate as two operations.
        return int(self._mode.get_total_flops()) // 2
