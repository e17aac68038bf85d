"""The contract every compression pass keeps.

A pass takes the current model (a `torch.nn.Module` in eval mode) and returns a new one
plus a small report; it never touches files. The recipe engine (`edgepack.compress`)
runs passes in order, evaluates and gates after each, and caches each stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack.errors import ConfigError

if TYPE_CHECKING:  # numpy stays out of `import edgepack.passes`; only annotations need it
    import numpy as np


class PassConfig(BaseModel):
    """Typed parameters of one stage. Unknown keys are errors; fields are snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str) -> "PassConfig":
        """Validate one stage's table; every problem becomes one line `where.field: message`.

        Pydantic's own text for an unknown key ("Extra inputs are not permitted") does not say
        what would have been valid, so that case lists the accepted keys.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            problems = [_describe(cls, where, err) for err in e.errors()]
            raise ConfigError("; ".join(problems), problems=problems) from None

    def referenced_files(self) -> tuple[str, ...]:
        """The project files this stage reads besides the model it is handed: model
        factories as "file.py:function" and weights as paths relative to the project.
        The stage cache hashes their content, so a pass that reads a file must name it."""
        return ()


def _describe(cls: type[PassConfig], where: str, err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    path = ".".join([where, *loc])
    if err["type"] == "extra_forbidden":
        parent = ".".join([where, *loc[:-1]])
        valid = ", ".join(sorted(cls.model_fields)) if len(loc) == 1 else "see the pass documentation"
        return f"{parent}: unknown key {loc[-1]!r}; valid keys: {valid}"
    if err["type"] == "missing":
        return f"{path}: required"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {msg} (got {err.get('input')!r})"


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray | tuple   # inputs [N, ...]: one array, or a tuple of arrays (one per model input)
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
