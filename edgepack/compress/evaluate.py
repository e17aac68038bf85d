"""Measuring a model between stages: quality on held-out data and cost (parameters,
MACs, bytes). The same numbers for every stage, so a table of them shows where accuracy
or size moved."""

from __future__ import annotations

import contextlib

import io
import zlib
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ModelMetrics:
    accuracy: float | None          # classification only; other tasks' scores are in `metrics`
    precision_macro: float | None
    recall_macro: float | None
    f1_macro: float | None
    parameters: int           # unique parameters (tied ones counted once)
    nonzero_parameters: int
    macs: int                 # multiply-accumulates for one input of the deployed shape
    fp32_bytes: int           # the weights stored densely in fp32
    zipped_bytes: int         # the same bytes after zlib (what sparsity and sharing buy)
    notes: tuple[str, ...] = ()  # how the figures were obtained when not the usual way
    metrics: dict | None = None  # the task's scores and the project's metric hook's (verify.tasks.Scorer)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


# Rows per forward pass: as many as keep a batch's inputs near this many elements, at
# most MAX_BATCH. Large batches of large inputs are slower, not faster, on a CPU: their
# activations leave the caches (MobileNetV2 at 224x224 on 280 images: 7.3 s in batches
# of 256, 2.7 s in batches of 8 or 4, 2 cores), while small inputs want large batches to
# spread the per-call overhead.
BATCH_ELEMENTS = 1 << 20
MAX_BATCH = 256


def batch_size(inputs: tuple) -> int:
    """The rows per forward pass for inputs of this size (BATCH_ELEMENTS)."""
    per_row = sum(int(np.prod(a.shape[1:], dtype=np.int64)) for a in inputs) or 1
    rows = max(1, BATCH_ELEMENTS // per_row)
    return min(MAX_BATCH, 1 << (rows.bit_length() - 1))


def predict(model, x, *, declared_batch: int = 1, batch: int | None = None, names=None,
            notes: list[str] | None = None) -> tuple[np.ndarray, ...]:
    """The model's outputs on `x` (one array, or a tuple of arrays in declared input
    order), as a tuple in declared output order (`names`: forward() may return a dict
    keyed by them): in batches of `batch` (default: batch_size) when the model takes any
    batch size, else in chunks of its declared batch (a .pt2 program exported with static
    shapes), padding the last chunk. Models arrive in eval mode (an exported program's
    module cannot be switched). Both ways give the same outputs; when the first one is
    refused, why is appended to `notes`."""
    from edgepack.sources.foreign import is_foreign

    inputs = x if isinstance(x, tuple) else (x,)
    batch = batch or batch_size(inputs)
    if is_foreign(model):
        return model.predict(inputs, batch=batch, declared_batch=declared_batch, notes=notes)
    import torch

    from edgepack.modelio import concat, count, output_tensors, rows, to_torch

    n = count(inputs)

    def run(part) -> tuple:
        out = model(*to_torch(part))
        if names is None:   # a forward's own order: a tensor, a tuple, or a dict's values
            out = (out,) if isinstance(out, torch.Tensor) else tuple(out.values()) if isinstance(out, dict) else out
            return tuple(t.numpy() for t in out)
        return tuple(t.numpy() for t in output_tensors(out, names))

    with torch.no_grad():
        try:
            with _channels_last(model, inputs):
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


@contextlib.contextmanager
def _channels_last(model, inputs: tuple):
    """The model's 4-D weights in channels-last layout while it predicts on image batches:
    oneDNN's convolutions (depthwise ones above all) run far faster so (MobileNetV2 fp32,
    64 images on 2 cores of an AMD EPYC: 52 -> 31 ms per image; outputs within 2e-9). The
    weights' own tensors are put back afterwards, so the model exported later is the
    same object with the same bytes."""
    import torch

    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.modules()) if hasattr(model, "modules") else False
    if not (convolutional and len(inputs) == 1 and inputs[0].ndim == 4 and np.issubdtype(inputs[0].dtype, np.floating)):
        yield
        return
    saved = [(p, p.data) for p in model.parameters() if p.dim() == 4]
    try:
        for p, data in saved:
            p.data = data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for p, data in saved:
            p.data = data


def _unique_tensors(model):
    seen, tensors = set(), []
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        tensors.append(t)
    return tensors


def cost(model, example: np.ndarray) -> dict:
    from edgepack.sources.foreign import is_foreign

    if is_foreign(model):
        return model.cost_summary(example)
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


def measure(model, x, y: np.ndarray | None, example, *, scorer=None, reference: tuple | None = None,
            names=None) -> ModelMetrics:
    """Quality and cost of `model` on (x, y): `x` one array or a tuple in declared input
    order, outputs read in `names` order (the scorer's when given). With a `scorer`
    (verify.tasks.Scorer) the task's metrics are scored too, on the first output (and the
    project's metric hook on all of them), embeddings against `reference` (the original
    model's outputs on x; None: `model` is the original). Without one: a classifier."""
    notes: list[str] = []
    first = example[0] if isinstance(example, tuple) else example
    names = scorer.names if scorer is not None else names
    outputs = predict(model, x, declared_batch=first.shape[0], notes=notes, names=names)
    task = scorer.task if scorer is not None else "classification"
    scores = None
    if scorer is not None:
        from edgepack.verify.tasks import as_outputs

        named = as_outputs(scorer.names, outputs)
        scores = scorer.score(named, y, reference=as_outputs(scorer.names, reference) if reference is not None else named)
    if task != "classification" or y is None:
        return ModelMetrics(accuracy=None, precision_macro=None, recall_macro=None, f1_macro=None,
                            **cost(model, example), notes=tuple(notes), metrics=scores)
    from sklearn.metrics import precision_recall_fscore_support

    logits = outputs[0]
    top1 = logits.reshape(len(logits), -1).argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, top1, average="macro", zero_division=0)
    return ModelMetrics(accuracy=float(np.mean(top1 == y)), precision_macro=float(p), recall_macro=float(r),
                        f1_macro=float(f), **cost(model, example), notes=tuple(notes), metrics=scores)


@dataclass(frozen=True)
class StageMetric:
    """What compression stages are gated on: the build's gated metric (the project's
    `budgets.gated_metric`), else the task's headline score (classification accuracy,
    regression MAE, the lowest embedding cosine against the original model). A stage's
    drop is how much worse it got: in points for accuracies (x100), else in the
    metric's own units."""

    name: str
    direction: str              # "higher" or "lower" is better

    @property
    def unit(self) -> str:
        return "pt" if self.name.endswith("accuracy") else ""

    def value(self, row_metrics: dict) -> float | None:
        scores = row_metrics.get("metrics") or {}
        return scores.get(self.name, row_metrics.get(self.name))

    def drop(self, before: dict, after: dict) -> float:
        a, b = self.value(before), self.value(after)
        if a is None or b is None:
            return 0.0
        worse = (a - b) if self.direction == "higher" else (b - a)
        return worse * (100.0 if self.unit == "pt" else 1.0)

    def describe(self, row_metrics: dict) -> str:
        v = self.value(row_metrics)
        if v is None:
            return f"{self.name} -"
        return f"{self.name} {v * 100:.2f}%" if self.unit == "pt" else f"{self.name} {v:.4g}"

    def amount(self, value: float) -> str:
        return f"{value:.2f} pt" if self.unit == "pt" else f"{value:.4g}"

    def budget(self, value: float) -> str:
        return f"{value:g} pt" if self.unit == "pt" else f"{value:g}"


def stage_metric(project) -> StageMetric | None:
    """The metric stages are gated on for `project`, or None (an unlabelled project with
    no metric hook to gate on)."""
    from edgepack.verify.tasks import HEADLINE_METRIC, metric_direction

    budgets = project.budgets
    if budgets.gated_metric:
        return StageMetric(budgets.gated_metric, budgets.metric_direction or metric_direction(budgets.gated_metric) or "higher")
    name = HEADLINE_METRIC.get(project.data.task)
    return StageMetric(name, metric_direction(name)) if name else None
