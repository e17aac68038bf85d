"""The labels a data hook returns, checked for the project's task before any work starts:
class indices for classification, float targets for regression, nothing (or anything
one per sample, for the project's metric hook) for embeddings and unlabelled projects."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack.errors import ConfigError

# Tasks whose data hooks may return inputs without labels.
LABELS_OPTIONAL = ("embedding", "none")


def split_result(result: Any, *, task: str, what: str) -> tuple[Any, Any]:
    """(inputs, labels or None) from what a data hook returned: `(inputs, labels)`, or for
    the tasks that need no labels also `inputs` alone or `(inputs, None)`."""
    if isinstance(result, tuple) and len(result) == 2:
        return result
    if task in LABELS_OPTIONAL and not isinstance(result, tuple):
        return result, None
    expected = ("(inputs, labels), (inputs, None) or inputs alone" if task in LABELS_OPTIONAL
                else "a tuple (inputs, labels) of numpy arrays")
    raise ConfigError(f"{what} returned {type(result).__name__}; expected {expected}")


def _array(value: Any, *, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses ragged nesting ("inhomogeneous shape")
        raise ConfigError(f"{what}: labels are ragged (nested lists or arrays of different shapes); "
                          "return one numpy array with every sample's label the same shape") from None
    if array.dtype == object:
        raise ConfigError(f"{what}: labels are a numpy object array (ragged lists or mixed types); "
                          "return one numeric numpy array")
    return array


def _first(mask: np.ndarray) -> int:
    return int(np.argwhere(mask.reshape(len(mask), -1).any(axis=1))[0][0])


def check_labels(labels: Any, *, task: str, samples: int, what: str, classes: int | None = None) -> np.ndarray | None:
    """The labels as an array of one label per sample, or None where the task allows
    none. Classification: integer class indices 0 .. classes-1. Regression: finite
    numbers, one array per sample (its shape is checked against the model's output by
    `check_regression_shape`, once the output is known). Embedding and none: optional,
    handed to the metric hook as given."""
    if labels is None:
        if task in LABELS_OPTIONAL:
            return None
        raise ConfigError(f"{what}: no labels; task {task!r} needs them (tasks that do not: {', '.join(LABELS_OPTIONAL)})")
    y = _array(labels, what=what)
    if y.ndim == 0 or len(y) != samples:
        got = "a single value" if y.ndim == 0 else f"{len(y)} labels"
        raise ConfigError(f"{what}: {got} for {samples} inputs; expected one label per input")
    if task == "classification":
        return _class_indices(y, what=what, classes=classes)
    if task == "regression":
        if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)) or y.dtype == np.bool_:
            raise ConfigError(f"{what}: labels are {y.dtype}; regression takes float targets shaped like the model's output")
        with np.errstate(over="ignore"):
            y = y.astype(np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            raise ConfigError(f"{what}: labels hold {int(bad.sum())} non-finite value(s) (NaN or Inf), first at sample "
                              f"{_first(bad)}; every regression target must be finite")
        return y
    return y


def _class_indices(y: np.ndarray, *, what: str, classes: int | None) -> np.ndarray:
    if y.ndim != 1:
        raise ConfigError(f"{what}: labels of shape {list(y.shape)} for {len(y)} inputs; expected a 1-D array with one "
                          "class index per input")
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"{what}: labels are {y.dtype}; expected integer class indices (e.g. np.int64)")
    y = y.astype(np.int64)
    upper = classes if classes is not None else np.iinfo(np.int64).max
    outside = (y < 0) | (y >= upper)
    if outside.any():
        i = _first(outside)
        valid = f"0 to {classes - 1} (the model outputs {classes} classes)" if classes is not None else "0 or more"
        raise ConfigError(f"{what}: {int(outside.sum())} label(s) outside {valid}, first at sample {i}: {int(y[i])}")
    return y


def check_regression_shape(labels: np.ndarray | None, output: np.ndarray, *, what: str, output_name: str) -> None:
    """Regression targets must be shaped like the model's (first) output, sample for
    sample; [N] labels for an [N, 1] output are the same numbers and pass."""
    if labels is None:
        return
    per_sample, expected = labels.shape[1:], output.shape[1:]
    if tuple(per_sample) != tuple(expected) and not (per_sample == () and tuple(expected) == (1,)):
        raise ConfigError(f"{what}: labels have shape {list(labels.shape)}; regression targets must be shaped like the "
                          f"model's output {output_name!r} [N, {', '.join(map(str, expected))}]")
