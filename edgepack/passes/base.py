"""The contract every compression pass keeps.

A pass takes the current model (a `torch.nn.Module` in eval mode) and returns a new one
plus a small report; it never touches files. The recipe engine (`edgepack.compress`)
runs passes in order, evaluates and gates after each, and caches each stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict


class PassConfig(BaseModel):
    """Typed parameters of one stage. Unknown keys are errors; fields are snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray   # float32 inputs [N, ...]
    y: np.ndarray   # int64 labels [N]


@dataclass(frozen=True)
class PassContext:
    """What a pass may use besides the model.

    training:    the project's training split (None when the project has no training hook;
                 a pass that needs it raises ConfigError naming `data.training`).
    validation:  held-out data for early stopping / sanity checks inside a pass (the engine
                 evaluates after the pass on the evaluation split itself).
    load_model:  resolves a model reference from the recipe: "original" (the source model,
                 fp32) or "file.py:factory" with weights "path.safetensors" -> nn.Module (eval).
    example:     one input of the deployed shape (numpy), for tracing/dependency graphs.
    seed:        every random choice derives from it: same inputs -> same output.
    threads:     torch threads to use.
    progress:    one-line status updates for the CLI.
    """

    training: Dataset | None
    validation: Dataset
    load_model: Callable[[str, str | None], Any]
    example: np.ndarray
    seed: int = 0
    threads: int = 2
    progress: Callable[[str], None] = field(default=lambda msg: None)


@dataclass(frozen=True)
class PassResult:
    model: Any                  # torch.nn.Module, eval mode
    report: dict                # JSON-serialisable facts the pass measured (e.g. sparsity, clusters)


class Pass(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type[PassConfig]]

    def run(self, model: Any, config: PassConfig, ctx: PassContext) -> PassResult: ...
