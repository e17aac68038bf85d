"""Real data and tiny models for the pass tests: scikit-learn's 8x8 digits (ships with
scikit-learn, no download) split once with a fixed permutation."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from edgepack.passes.base import Dataset, PassContext
from edgepack.passes.training import TrainingFields, accuracy, train


@functools.lru_cache(maxsize=1)
def digits() -> tuple[Dataset, Dataset]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    tr, va = order[:1200], order[1200:]
    return Dataset(x[tr], y[tr]), Dataset(x[va], y[va])


def small_cnn(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4, 64), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(64, 10),
    )


def mlp(hidden: tuple[int, ...]) -> nn.Module:
    layers, width = [nn.Flatten()], 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def trained(build, epochs: int, *, seed: int = 0, lr: float = 3e-3, data: Dataset | None = None) -> nn.Module:
    """build() under a fixed seed, then trained: the same weights whichever tests ran before."""
    torch.manual_seed(seed)
    model = build()
    train(model, data or digits()[0], epochs=epochs, settings=TrainingFields(learning_rate=lr), seed=seed)
    return model.eval()


def context(*, training: bool = True, load_model=None, seed: int = 0, train_data: Dataset | None = None) -> PassContext:
    tr, va = digits()

    def no_models(ref, weights):
        raise AssertionError(f"this test loads no model, asked for {ref}")

    return PassContext(training=(train_data or tr) if training else None, validation=va,
                       load_model=load_model or no_models, example=va.x[:1], seed=seed, threads=1)


def val_accuracy(model: nn.Module) -> float:
    return accuracy(model, digits()[1])


def image_context(size: int = 32, samples: int = 16) -> PassContext:
    """Random RGB images for the standard nets: what matters there is structure, not what
    the nets predict."""
    x = np.random.default_rng(0).standard_normal((samples, 3, size, size)).astype(np.float32)
    return PassContext(training=None, validation=Dataset(x, np.zeros(samples, np.int64)), load_model=None,
                       example=x[:1], threads=1)
