"""The project's data hooks: calibration, evaluation and training splits, checked for
the shapes and types the model expects before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.config.schema import Project
from edgepack.errors import ConfigError
from edgepack.sources.hooks import call_hook
from edgepack.sources.labels import check_labels, split_result


@dataclass(frozen=True)
class Split:
    name: str
    x: np.ndarray
    y: np.ndarray | None            # checked for the task (sources.labels); None: unlabelled

    def __len__(self) -> int:
        return len(self.x)


def _as_array(value, *, what: str, part: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses ragged nesting ("inhomogeneous shape")
        raise ConfigError(f"{what}: {part} are ragged (nested lists or arrays of different shapes); "
                          "return one numpy array with every sample the same shape") from None
    if array.dtype == object:
        raise ConfigError(f"{what}: {part} are a numpy object array (ragged lists or mixed types); "
                          "return one numeric numpy array with every sample the same shape")
    return array


def _first_index(mask: np.ndarray) -> int:
    return int(np.argwhere(mask)[0][0])


def load_split(project_dir: Path, project: Project, name: str, *, classes: int | None = None) -> Split:
    """The split a data hook returns, checked: float inputs of the model's shape, all
    finite; one integer label per input, each a class the model outputs (0 .. classes-1,
    when `classes` is given). Anything else is bad input, named here before any export,
    not a NaN deep inside a quantizer or a parity of "no error" on NaN outputs.

    Integer inputs (uint8 images) are refused rather than converted: a model trained on
    scaled floats would be calibrated and measured on the wrong range without a word."""
    spec = getattr(project.data, name)
    if spec is None:
        raise ConfigError(f"edgepack.toml: data.{name}: no hook given, and this build needs the {name} split")
    what = f"data.{name} hook {spec!r}"
    result = call_hook(project_dir, spec, what=f"data.{name} hook")
    inputs, labels = split_result(result, task=project.data.task, what=what)
    x = _as_array(inputs, what=what, part="inputs")
    expected = tuple(project.model.input_shape[1:])
    if x.ndim == 0 or len(x) == 0:
        raise ConfigError(f"{what} returned no samples; it must return at least one")
    if x.ndim != len(project.model.input_shape) or tuple(x.shape[1:]) != expected:
        raise ConfigError(
            f"{what}: inputs have shape {list(x.shape)}, the model takes "
            f"[N, {', '.join(map(str, expected))}] (model.input_shape = {list(project.model.input_shape)})"
        )
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        raise ConfigError(f"{what}: inputs are {x.dtype}; the model takes float32: convert and scale them as the model "
                          f"was trained (e.g. x.astype(np.float32) / 255 for 8-bit images)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{what}: inputs are {x.dtype}; expected a float32 array")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, reported below
        x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = int((~np.isfinite(x)).sum())
        raise ConfigError(f"{what}: inputs hold {bad} non-finite value(s) (NaN or Inf, or beyond float32's range) in "
                          f"{int((~finite).sum())} of {len(x)} samples, first at sample {_first_index(~finite)}; "
                          "every input value must be finite")
    y = check_labels(labels, task=project.data.task, samples=len(x), what=what, classes=classes)
    return Split(name, x, y)
