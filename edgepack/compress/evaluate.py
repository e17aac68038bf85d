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


def predict(model, x, *, declared_batch: int = 1, batch: int = 256, names=None,
            notes: list[str] | None = None) -> tuple[np.ndarray, ...]:
    """The model's outputs on `x` (one array, or a tuple of arrays in declared input
    order), as a tuple in declared output order (`names`: forward() may return a dict
    keyed by them): in batches of `batch` when the model takes any batch size, else in
    chunks of its declared batch (a .pt2 program exported with static shapes), padding
    the last chunk. Models arrive in eval mode (an exported program's module cannot be
    switched). Both ways give the same outputs; when the first one is refused, why is
    appended to `notes`."""
    import torch

    from edgepack.modelio import concat, count, output_tensors, rows, to_torch

    inputs = x if isinstance(x, tuple) else (x,)
    n = count(inputs)

    def run(part) -> tuple:
        out = model(*to_torch(part))
        if names is None:   # a forward's own order: a tensor, a tuple, or a dict's values
            out = (out,) if isinstance(out, torch.Tensor) else tuple(out.values()) if isinstance(out, dict) else out
            return tuple(t.numpy() for t in out)
        return tuple(t.numpy() for t in output_tensors(out, names))

    with torch.no_grad():
        try:
            return concat([run(rows(inputs, i, i + batch)) for i in range(0, n, batch)])
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            reason = f"{type(e).__name__}: {first}"
        chunks = []
        for i in range(0, n, declared_batch):
            part = rows(inputs, i, i + declared_batch)
            if len(part[0]) < declared_batch:
                part = tuple(np.concatenate([a, np.zeros((declared_batch - len(a), *a.shape[1:]), a.dtype)]) for a in part)
            chunks.append(tuple(o[: n - i] for o in run(part)))
        if notes is not None:
            notes.append(f"predicted in chunks of the declared batch {declared_batch}: the model refused a batch "
                         f"of {min(batch, n)} ({reason})")
        return concat(chunks)


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
    macs = count_macs(model, example)
    buf = io.BytesIO()
    for t in _unique_tensors(model):
        buf.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    raw = buf.getvalue()
    return {"parameters": n_params, "nonzero_parameters": nonzero, "macs": int(macs),
            "fp32_bytes": len(raw), "zipped_bytes": len(zlib.compress(raw, 9))}


def measure(model, x, y: np.ndarray, example, *, classification: bool = True, names=None) -> ModelMetrics:
    """Quality on (x, y) from the first output (in `names` order when given) and cost."""
    from sklearn.metrics import precision_recall_fscore_support

    notes: list[str] = []
    first = example[0] if isinstance(example, tuple) else example
    logits = predict(model, x, declared_batch=first.shape[0], notes=notes, names=names)[0]
    top1 = logits.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, top1, average="macro", zero_division=0)
    return ModelMetrics(accuracy=float(np.mean(top1 == y)), precision_macro=float(p), recall_macro=float(r),
                        f1_macro=float(f), **cost(model, example), notes=tuple(notes))
