"""The project's data hooks: calibration, evaluation and training splits, checked for
the shapes and types the model expects before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.config.schema import Project
from edgepack.errors import ConfigError
from edgepack.sources.hooks import call_hook


@dataclass(frozen=True)
class Split:
    name: str
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


def load_split(project_dir: Path, project: Project, name: str) -> Split:
    spec = getattr(project.data, name)
    if spec is None:
        raise ConfigError(f"edgepack.toml: data.{name}: no hook given, and this build needs the {name} split")
    what = f"data.{name} hook"
    result = call_hook(project_dir, spec, what=what)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ConfigError(f"{what} {spec!r} returned {type(result).__name__}; expected a tuple (inputs, labels) of numpy arrays")
    x, y = (np.asarray(a) for a in result)
    expected = tuple(project.model.input_shape[1:])
    if len(x) == 0:
        raise ConfigError(f"{what} {spec!r} returned no samples; it must return at least one")
    if x.ndim != len(project.model.input_shape) or tuple(x.shape[1:]) != expected:
        raise ConfigError(
            f"{what} {spec!r}: inputs have shape {list(x.shape)}, the model takes "
            f"[N, {', '.join(map(str, expected))}] (model.input_shape = {list(project.model.input_shape)})"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{what} {spec!r}: inputs are {x.dtype}; expected float32")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{what} {spec!r}: labels must be a 1-D integer array with one label per input, got {y.dtype} {list(y.shape)}")
    return Split(name, np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64))
