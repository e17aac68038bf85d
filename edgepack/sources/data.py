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
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ConfigError(f"{what} returned {type(result).__name__}; expected a tuple (inputs, labels) of numpy arrays")
    x = _as_array(result[0], what=what, part="inputs")
    y = _as_array(result[1], what=what, part="labels")
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
    if y.ndim != 1 or len(y) != len(x):
        got = f"{len(y)} labels" if y.ndim == 1 else f"labels of shape {list(y.shape)}"
        raise ConfigError(f"{what}: {got} for {len(x)} inputs; expected a 1-D array with one label per input")
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{what}: labels are {y.dtype}; expected integer class indices (e.g. np.int64)")
    y = y.astype(np.int64)
    upper = classes if classes is not None else np.iinfo(np.int64).max
    outside = (y < 0) | (y >= upper)
    if outside.any():
        i = _first_index(outside)
        valid = f"0 to {classes - 1} (the model outputs {classes} classes)" if classes is not None else "0 or more"
        raise ConfigError(f"{what}: {int(outside.sum())} label(s) outside {valid}, first at sample {i}: {int(y[i])}")
    return Split(name, x, y)
