"""The one fine-tuning loop that prune, distill and cluster share.

A pass supplies the loss (hard labels, distillation targets, ...) and optional hooks that
keep its constraint while weights move: pruning masks stay applied by torch's own
parametrization, cluster assignments are enforced by `after_backward`/`after_step`.
Torch is imported inside the functions so `import edgepack.passes` stays cheap.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from edgepack.errors import ConfigError
from edgepack.passes.base import Dataset, PassConfig, PassContext

if TYPE_CHECKING:
    import torch


class TrainingFields(PassConfig):
    """Optimiser settings every pass that trains accepts, flat in the stage's table."""

    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    batch_size: int = Field(64, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class TrainLog:
    epochs: int
    steps: int
    loss_per_epoch: tuple[float, ...]
    # What a stage that lost accuracy is explained with (compress.diagnose).
    samples: int = 0
    optimizer: str = ""
    learning_rate: float = 0.0

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps,
                "loss_per_epoch": [round(v, 6) for v in self.loss_per_epoch],
                "samples": self.samples, "optimizer": self.optimizer, "learning_rate": self.learning_rate}


def require_training(ctx: PassContext, stage: str) -> Dataset:
    if ctx.training is None or len(ctx.training.y) == 0:
        raise ConfigError(f"{stage} trains the model, but the project has no training data: "
                          "set `data.training` in edgepack.toml (a hook returning (x, y)) or set the "
                          "stage's epochs to 0")
    return ctx.training


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads and restore the caller's setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Inputs:
    """A model's inputs as tensors: one (a one-input model) or several, indexed together.
    A batch of several is a tuple; `call(model, batch)` feeds it as forward()'s arguments."""

    def __init__(self, x):
        import torch

        several = isinstance(x, tuple)
        self.tensors = tuple(_tensor(a) for a in (x if several else (x,)))
        self.several = several
        self._torch = torch

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx):
        parts = tuple(t[idx] for t in self.tensors)
        return parts if self.several else parts[0]


def _tensor(a):
    """A float array as float32 (the training dtype), integer inputs (token ids) as they are."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.as_tensor(a, dtype=torch.float32) if np.issubdtype(a.dtype, np.floating) else torch.as_tensor(a)


def forward(model, xb):
    """The model's first output (its logits) on one batch: a tensor, or a tuple of them."""
    from edgepack.modelio import first_output

    return first_output(model(*xb) if isinstance(xb, tuple) else model(xb))


def cross_entropy_loss(model, xb, yb, idx):
    import torch.nn.functional as F

    return F.cross_entropy(forward(model, xb), yb)


def train(model: "torch.nn.Module", data: Dataset, *, epochs: int, settings: TrainingFields, seed: int,
          loss_fn: Callable[[Any, Any, Any, Any], Any] = cross_entropy_loss,
          after_backward: Callable[[Any], None] | None = None,
          after_step: Callable[[Any], None] | None = None,
          progress: Callable[[str], None] = lambda msg: None,
          label: str = "fine-tune") -> TrainLog:
    """Train `model` in place on `data`; return it in eval mode.

    loss_fn(model, x_batch, y_batch, index_batch) -> scalar: the index lets a loss look up
    per-sample targets computed once beforehand (e.g. teacher probabilities).
    The shuffling order comes from a generator seeded with `seed`, so two runs with the same
    seed and thread count produce the same weights.
    """
    import torch

    torch.manual_seed(seed)
    x = _Inputs(data.x)
    y = torch.as_tensor(data.y, dtype=torch.long)
    n = len(y)
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum,
                              weight_decay=settings.weight_decay)
    steps_per_epoch = (n + settings.batch_size - 1) // settings.batch_size
    total = max(1, epochs * steps_per_epoch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
             if settings.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, x[idx], y[idx], idx)
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            opt.step()
            if sched is not None:
                sched.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step(model)
            running += float(loss.detach()) * len(idx)
            step += 1
        losses.append(running / n)
        progress(f"{label}: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    model.eval()
    return TrainLog(epochs=epochs, steps=step, loss_per_epoch=tuple(losses), samples=n,
                    optimizer=settings.optimizer, learning_rate=settings.learning_rate)


def predict_logits(model, x, batch_size: int = 256):
    """Logits of `model` (eval mode, no grad) on numpy or tensor inputs."""
    import torch

    x = _Inputs(x)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([forward(model, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def accuracy(model, data: Dataset) -> float:
    import torch

    logits = predict_logits(model, data.x)
    return float((logits.argmax(1) == torch.as_tensor(data.y)).float().mean())
