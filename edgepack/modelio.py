"""The model's interface at run time: its inputs as a tuple of arrays in declared order
(config.schema.ModelSource.input_specs) and its outputs as a tuple in declared order
(output_names), whatever forward() returns (one tensor, a tuple or a dict).

Every step that feeds the model or reads what it returns goes through these helpers, so
a one-input, one-output model and a model with several named inputs and outputs take the
same path."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgepack.errors import ConfigError

Inputs = tuple  # tuple[np.ndarray, ...], one per declared input, all with the same N
Outputs = tuple  # tuple[np.ndarray, ...], one per declared output


def example_inputs(specs, *, dims: Sequence[Sequence] | None = None, at_max: bool = False) -> Inputs:
    """Zeros of each input's declared shape and dtype; with `dims` (per input, the dynamic
    dims it is exported with) each such dim is set to its max or to max(2, min)."""
    out = []
    for i, spec in enumerate(specs):
        shape = list(spec.shape)
        for d in (dims[i] if dims is not None else ()):
            shape[d.dim] = d.max if at_max else max(2, d.min)
        out.append(np.zeros(shape, dtype=np.dtype(spec.dtype)))
    return tuple(out)


def rows(inputs: Inputs, start: int, stop: int | None = None) -> Inputs:
    """Samples [start:stop] of every input, contiguous."""
    return tuple(np.ascontiguousarray(a[start:stop]) for a in inputs)


def count(inputs: Inputs) -> int:
    return len(inputs[0])


def to_torch(inputs: Inputs) -> tuple:
    """Torch tensors of the inputs, row-major copies in their own dtypes."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(a)).clone() for a in inputs)


def output_tensors(out: Any, names: Sequence[str]) -> tuple:
    """forward()'s return value as a tuple in declared output order: one tensor, a
    tuple/list in order, or a dict keyed by the declared names."""
    import torch

    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, dict):
        missing = [n for n in names if n not in out]
        if missing:
            raise ConfigError(f"the model returns a dict with keys {sorted(map(str, out))}; "
                              f"model.outputs declares {list(names)} (missing {missing[0]!r})")
        out = tuple(out[n] for n in names)
    elif not isinstance(out, (tuple, list)):
        raise ConfigError(f"the model returns {type(out).__name__}; expected a tensor, a tuple of tensors or a dict "
                          "of tensors keyed by output name")
    if len(out) != len(names):
        raise ConfigError(f"the model returns {len(out)} output(s); the project declares {len(names)} "
                          f"({', '.join(names)}): list each in [[model.outputs]]")
    for name, t in zip(names, out):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"the model's output {name!r} is {type(t).__name__}, not a tensor")
    return tuple(out)


def first_output(out: Any):
    """The first output of forward() (a classifier's logits): what the label metrics and
    the losses of training passes read."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0]


def concat(parts: list[Outputs]) -> Outputs:
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))


def ordered_outputs(got: dict[str, np.ndarray], names: Sequence[str]) -> Outputs:
    """A runtime's outputs (by its own names, in its own order) in declared order: by name
    where the runtime carries the declared names (LiteRT's signature, ONNX), else by
    position (ExecuTorch has none)."""
    if all(n in got for n in names):
        return tuple(got[n] for n in names)
    values = list(got.values())
    if len(values) != len(names):
        raise ValueError(f"the artifact returned {len(values)} output(s) ({', '.join(got)}); "
                         f"the model declares {len(names)} ({', '.join(names)})")
    return tuple(values)
