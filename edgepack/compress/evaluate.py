"""Measuring a model between stages: quality on held-out data and cost (parameters,
MACs, bytes). The same numbers for every stage, so a table of them shows where accuracy
or size moved."""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ModelMetrics:
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    parameters: int           # unique parameters (tied ones counted once)
    nonzero_parameters: int
    macs: int                 # multiply-accumulates for one input of the deployed shape
    fp32_bytes: int           # the weights stored densely in fp32
    zipped_bytes: int         # the same bytes after zlib (what sparsity and sharing buy)
    notes: tuple[str, ...] = ()  # how the figures were obtained when not the usual way

    def as_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def predict(model, x: np.ndarray, *, declared_batch: int = 1, batch: int = 256,
            notes: list[str] | None = None) -> np.ndarray:
    """The model's outputs on `x`: in batches of `batch` when the model takes any batch
    size, else in chunks of its declared batch (a .pt2 program exported with static
    shapes), padding the last chunk. Models arrive in eval mode (an exported program's
    module cannot be switched). Both ways give the same outputs; when the first one is
    refused, why is appended to `notes`."""
    import torch

    with torch.no_grad():
        try:
            return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).numpy()
                                   for i in range(0, len(x), batch)])
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            reason = f"{type(e).__name__}: {first}"
        chunks = []
        for i in range(0, len(x), declared_batch):
            part = x[i : i + declared_batch]
            if len(part) < declared_batch:
                part = np.concatenate([part, np.zeros((declared_batch - len(part), *x.shape[1:]), x.dtype)])
            chunks.append(model(torch.from_numpy(np.ascontiguousarray(part))).numpy()[: len(x) - i])
        if notes is not None:
            notes.append(f"predicted in chunks of the declared batch {declared_batch}: the model refused a batch "
                         f"of {min(batch, len(x))} ({reason})")
        return np.concatenate(chunks)


def _unique_tensors(model):
    seen, tensors = set(), []
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        tensors.append(t)
    return tensors


def cost(model, example: np.ndarray) -> dict:
    import torch

    from edgepack.devices.costs import count_macs

    params = [p for p in {id(p): p for p in model.parameters()}.values()]
    n_params = int(sum(p.numel() for p in params))
    nonzero = int(sum(int(torch.count_nonzero(p)) for p in params))
    # Operator-level MACs of convolutions, linear layers and matmuls only: BatchNorm,
    # activations and pooling are not multiply-accumulates (and fold or fuse on export).
    macs = count_macs(model, torch.from_numpy(example))
    buf = io.BytesIO()
    for t in _unique_tensors(model):
        buf.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    raw = buf.getvalue()
    return {"parameters": n_params, "nonzero_parameters": nonzero, "macs": int(macs),
            "fp32_bytes": len(raw), "zipped_bytes": len(zlib.compress(raw, 9))}


def measure(model, x: np.ndarray, y: np.ndarray, example: np.ndarray, *, classification: bool = True) -> ModelMetrics:
    from sklearn.metrics import precision_recall_fscore_support

    notes: list[str] = []
    logits = predict(model, x, declared_batch=example.shape[0], notes=notes)
    top1 = logits.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, top1, average="macro", zero_division=0)
    return ModelMetrics(accuracy=float(np.mean(top1 == y)), precision_macro=float(p), recall_macro=float(r),
                        f1_macro=float(f), **cost(model, example), notes=tuple(notes))
