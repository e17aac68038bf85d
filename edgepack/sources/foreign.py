"""Source models that are not PyTorch: a Keras model, a TensorFlow SavedModel or an ONNX model.

The build's steps read a source through a few questions: its outputs on a batch of
inputs, what one inference costs (MACs, activation elements, parameters), and a digest
that keys caches. A PyTorch module answers them with torch (compress.evaluate,
devices.costs); a `ForeignModel` answers them with its own framework, so the load,
verify and write steps treat every source alike. What only PyTorch can do (capture,
the compression passes, the int8 rewrites) is refused at plan time for the others
(`plan_problems`), and the formats a source cannot reach are declared by each format
(`formats.base.Format.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What each source kind is called in a message.
KIND_NAMES = {"pytorch": "a PyTorch model", "keras": "a Keras model", "onnx": "an ONNX model",
              "saved_model": "a TensorFlow SavedModel"}


class ForeignModel:
    """A loaded non-PyTorch model, in the project's declared interface: inputs in
    declared order, outputs returned in declared order."""

    foreign = True
    kind = ""

    def __init__(self, sha256: str, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        self.sha256 = sha256
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    # -- what subclasses answer --------------------------------------------------------
    def run(self, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """The outputs on one batch."""
        raise NotImplementedError

    def fixed_batch(self) -> int | None:
        """The batch size the model only accepts, or None when it takes any."""
        return None

    def weights(self) -> list[np.ndarray]:
        """The float weight arrays (for parameter counts and sizes)."""
        raise NotImplementedError

    def layer_costs(self, example: tuple[np.ndarray, ...]) -> tuple[int, int]:
        """(MACs, activation elements) of one inference on `example`."""
        raise NotImplementedError

    # -- what the build asks -----------------------------------------------------------
    def predict(self, inputs: tuple[np.ndarray, ...], *, batch: int = 256, declared_batch: int = 1,
                notes: list[str] | None = None) -> tuple[np.ndarray, ...]:
        """Outputs on every row of `inputs`, in batches of `batch` (or of the model's
        fixed batch, padding the last chunk)."""
        from edgepack.modelio import concat, count, rows

        n = count(inputs)
        fixed = self.fixed_batch()
        if fixed is None:
            return concat([self.run(rows(inputs, i, i + batch)) for i in range(0, n, batch)])
        chunks = []
        for i in range(0, n, fixed):
            part = rows(inputs, i, i + fixed)
            if len(part[0]) < fixed:
                part = tuple(np.concatenate([a, np.zeros((fixed - len(a), *a.shape[1:]), a.dtype)]) for a in part)
            chunks.append(tuple(o[: n - i] for o in self.run(part)))
        if notes is not None and n > fixed:
            notes.append(f"predicted in chunks of {fixed}: the {self.kind} model's batch dimension is fixed")
        return concat(chunks)

    def cost_summary(self, example) -> dict:
        """The stage table's cost columns (compress.evaluate.cost's keys)."""
        import zlib

        arrays = [np.ascontiguousarray(w, dtype=np.float32) for w in self.weights()]
        raw = b"".join(a.tobytes() for a in arrays)
        macs, _ = self.layer_costs(_as_tuple(example))
        return {"parameters": int(sum(a.size for a in arrays)),
                "nonzero_parameters": int(sum(np.count_nonzero(a) for a in arrays)),
                "macs": int(macs), "fp32_bytes": len(raw), "zipped_bytes": len(zlib.compress(raw, 9))}

    def costs(self, example):
        from edgepack.devices.costs import ModelCosts

        xs = _as_tuple(example)
        macs, elements = self.layer_costs(xs)
        return ModelCosts(int(macs), int(elements + sum(int(np.prod(x.shape)) for x in xs)),
                          int(sum(np.asarray(w).size for w in self.weights())))

    def digest(self) -> str:
        """What keys exports of this model: the source file's bytes decide it."""
        return f"{self.kind}:{self.sha256}"


def _as_tuple(example) -> tuple:
    return example if isinstance(example, tuple) else (example,)


def is_foreign(model) -> bool:
    return bool(getattr(model, "foreign", False))


@dataclass(frozen=True)
class Interface:
    """What the model file says about its own inputs: name, shape (None: any size), dtype."""

    name: str
    shape: tuple
    dtype: str


def interface_problems(declared, found: list[Interface], *, what: str) -> list[str]:
    """The declared inputs against the model's own: the same count, rank, fixed sizes and
    dtypes (declared order is the model's order)."""
    if len(declared) != len(found):
        names = ", ".join(f.name for f in found)
        return [f"model.inputs: the {what} takes {len(found)} input(s) ({names}), the project declares "
                f"{len(declared)}; declare one [[model.inputs]] per model input, in the model's order"]
    problems = []
    for spec, f in zip(declared, found):
        if len(spec.shape) != len(f.shape):
            problems.append(f"model input {spec.name!r}: declared {list(spec.shape)}, the {what}'s input {f.name!r} "
                            f"has rank {len(f.shape)} ({_shape_text(f.shape)})")
            continue
        fixed = [(i, a, b) for i, (a, b) in enumerate(zip(spec.shape, f.shape)) if b is not None and a != b]
        if fixed:
            problems.append(f"model input {spec.name!r}: declared {list(spec.shape)}, the {what}'s input {f.name!r} "
                            f"is {_shape_text(f.shape)}")
        if f.dtype and f.dtype != spec.dtype:
            problems.append(f"model input {spec.name!r}: declared dtype {spec.dtype}, the {what}'s input {f.name!r} "
                            f"is {f.dtype}")
    return problems


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def plan_problems(project, resolved, where: str) -> list[str]:
    """What a project asks of a non-PyTorch source that only a PyTorch model can do."""
    kind = project.model.kind
    if kind == "pytorch" or resolved is None:
        return []
    model = KIND_NAMES[kind]
    problems = [f"{resolved.source}: stage {s.index} ({s.pass_name}) needs a PyTorch model; this project's source is "
                f"{model} (model.{kind}): remove the stage, or give the PyTorch model it was trained as "
                "(model.factory + model.weights, or model.program)" for s in resolved.stages]
    q = resolved.quantize
    for name, value in (("equalize", q.equalize), ("bias_correction", q.bias_correction),
                        ("keep_float", q.keep_float or q.auto_keep_float), ("sensitivity", q.analyses_sensitivity),
                        ("tune_ranges", q.tune_ranges)):
        if value:
            problems.append(f"{resolved.source}: quantize.{name} rewrites or analyses a PyTorch model; this project's "
                            f"source is {model} (model.{kind}): remove it")
    return problems
