"""A format edgepack does not build in, defined the way a new format is: one module with
its Format object. ".npz" holds a linear classifier's weight and bias; its "runtime" is
numpy, through the loader file beside this module (npz_loader.py), which the runners
ship beside the runner script."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.formats import Format, tensor_io


def _linear(module):
    import torch

    layers = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if len(layers) != 1:
        raise ValueError(f"npz holds exactly one Linear layer; the model has {len(layers)}")
    return layers[0]


def _write(req, dtype) -> dict:
    layer = _linear(req.module)
    weight = layer.weight.detach().numpy().astype(dtype)
    bias = layer.bias.detach().numpy().astype(dtype)
    np.savez(req.out_path, weight=weight, bias=bias)
    return {"dtype": np.dtype(dtype).name, "dynamic_dims": req.dims_record()}


def export_fp32(req) -> dict:
    return _write(req, np.float32)


def export_fp16(req) -> dict:
    return _write(req, np.float16)


def signature(path: Path, details: dict) -> dict:
    with np.load(path) as z:
        out_features, in_features = z["weight"].shape
        dtype = str(z["weight"].dtype)
    return {"inputs": [tensor_io("x", ["batch", int(in_features)], dtype)],
            "outputs": [tensor_io("y", ["batch", int(out_features)], dtype)]}


CARD = """**Linux (Python, numpy):**

```python
import numpy as np
z = np.load("{file}")
y = x.reshape(len(x), -1) @ z["weight"].T.astype(np.float32) + z["bias"]   # x: float32 {in_shape}
```"""

FORMAT = Format(
    name="npz",
    extension=".npz",
    runtime="numpy (linear layer)",
    precisions={"fp32": export_fp32, "fp16": export_fp16},
    signature=signature,
    loader_file=Path(__file__).with_name("npz_loader.py"),
    card=CARD,
    toolchain=("safetensors",),
)
