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
    inputs: dict[str, np.ndarray]   # input name -> [N, ...] array, in declared order
    y: np.ndarray | None            # checked for the task (sources.labels); None: unlabelled

    @property
    def x(self) -> tuple[np.ndarray, ...]:
        """The inputs as a tuple in declared order: what the model is called with."""
        return tuple(self.inputs.values())

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


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
    """The split a data hook returns, checked: each input of its declared shape and dtype
    (float inputs finite), all with the same number of samples; labels checked for the
    task (sources.labels: for a classifier one class index per sample below `classes`;
    None where the task allows unlabelled data).
    Anything else is bad input, named here before any export, not a NaN deep inside a
    quantizer or a parity of "no error" on NaN outputs.

    The inputs may be one array (a one-input model), a tuple or list in declared order,
    or a dict keyed by input name."""
    spec = getattr(project.data, name)
    if spec is None:
        raise ConfigError(f"edgepack.toml: data.{name}: no hook given, and this build needs the {name} split")
    what = f"data.{name} hook {spec!r}"
    result = call_hook(project_dir, spec, what=f"data.{name} hook")
    inputs, labels = split_result(result, task=project.data.task, what=what)
    inputs = _inputs(inputs, project.model.input_specs, what=what)
    n = len(next(iter(inputs.values())))
    y = check_labels(labels, task=project.data.task, samples=n, what=what, classes=classes)
    return Split(name, inputs, y)


def _inputs(value, specs, *, what: str) -> dict[str, np.ndarray]:
    """The hook's inputs as {name: array} in declared order, each checked."""
    names = [s.name for s in specs]
    if isinstance(value, dict):
        extra = [k for k in value if k not in names]
        missing = [n for n in names if n not in value]
        if extra or missing:
            problem = (f"has no {missing[0]!r}" if missing else f"has key {extra[0]!r}, which is not an input")
            raise ConfigError(f"{what}: the inputs dict {problem}; the model's inputs are {', '.join(names)}")
        given = [value[n] for n in names]
    elif isinstance(value, (tuple, list)) and len(specs) > 1:
        if len(value) != len(specs):
            raise ConfigError(f"{what}: {len(value)} input array(s) for {len(specs)} inputs "
                              f"({', '.join(names)}); return them in that order, or a dict keyed by name")
        given = list(value)
    elif len(specs) > 1:
        raise ConfigError(f"{what}: inputs are one {type(value).__name__}; the model takes {len(specs)} inputs "
                          f"({', '.join(names)}): return a tuple in that order or a dict keyed by name")
    else:
        given = [value]
    arrays = {spec.name: _checked_input(v, spec, what=what, several=len(specs) > 1) for spec, v in zip(specs, given)}
    counts = {n: len(a) for n, a in arrays.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{n} {c}" for n, c in counts.items())
        raise ConfigError(f"{what}: the inputs hold different numbers of samples ({listed}); each needs one row per sample")
    return arrays


def _checked_input(value, spec, *, what: str, several: bool) -> np.ndarray:
    label = f"input {spec.name!r}" if several else "inputs"
    field = f"model.inputs {spec.name!r} shape" if several else "model.input_shape"
    x = _as_array(value, what=what, part=label)
    expected = tuple(spec.shape[1:])
    if x.ndim == 0 or len(x) == 0:
        raise ConfigError(f"{what} returned no samples{f' for input {spec.name!r}' if several else ''}; it must return at least one")
    if x.ndim != len(spec.shape) or tuple(x.shape[1:]) != expected:
        raise ConfigError(f"{what}: {label} have shape {list(x.shape)}, the model takes "
                          f"[N, {', '.join(map(str, expected))}] ({field} = {list(spec.shape)})")
    if spec.is_float:
        return _float_input(x, spec, what=what, label=label)
    return _integer_input(x, spec, what=what, label=label)


def _float_input(x: np.ndarray, spec, *, what: str, label: str) -> np.ndarray:
    # Integer data for a float input is refused rather than converted: a model trained on
    # scaled floats would be calibrated and measured on the wrong range without a word.
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        raise ConfigError(f"{what}: {label} are {x.dtype}; the model takes {spec.dtype}: convert and scale them as the model "
                          f"was trained (e.g. x.astype(np.float32) / 255 for 8-bit images)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{what}: {label} are {x.dtype}; expected a {spec.dtype} array")
    with np.errstate(over="ignore"):  # values beyond the dtype's range become Inf, reported below
        x = np.ascontiguousarray(x, dtype=np.dtype(spec.dtype))
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        bad = int((~np.isfinite(x)).sum())
        raise ConfigError(f"{what}: {label} hold {bad} non-finite value(s) (NaN or Inf, or beyond {spec.dtype}'s range) in "
                          f"{int((~finite).sum())} of {len(x)} samples, first at sample {_first_index(~finite)}; "
                          "every input value must be finite")
    return x


def _integer_input(x: np.ndarray, spec, *, what: str, label: str) -> np.ndarray:
    """Token ids, indices and masks: the same kind of array (never a float array cast to
    integers, which would hide a hook returning the wrong thing), within the dtype's range."""
    want = np.dtype(spec.dtype)
    if want == np.bool_:
        if x.dtype != np.bool_:
            raise ConfigError(f"{what}: {label} are {x.dtype}; the model takes bool")
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise ConfigError(f"{what}: {label} are {x.dtype}; the model takes {spec.dtype} "
                          f"(integer ids or indices): return an integer array, e.g. ids.astype(np.{spec.dtype})")
    info = np.iinfo(want)
    outside = (x < info.min) | (x > info.max)
    if outside.any():
        i = _first_index(outside.reshape(len(x), -1).any(axis=1))
        raise ConfigError(f"{what}: {label} hold {int(outside.sum())} value(s) outside {spec.dtype}'s range "
                          f"[{info.min}, {info.max}], first at sample {i}")
    return np.ascontiguousarray(x, dtype=want)
