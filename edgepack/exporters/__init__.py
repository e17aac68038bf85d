"""Exporters: one module per format, each owning its quantizer and lowering.

Each format (edgepack.formats) maps the precisions it supports to the steps here that
write them; a step's module is imported only when its format is built, so `edgepack
--help` never loads a toolchain. `export` runs one step and checks what it wrote.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError, ToolchainError

@dataclass(frozen=True)
class ModelArtifact:
    """The one thing stages hand each other: a file, what it is, and where it came from."""

    path: Path
    format: str
    precision: str
    sha256: str
    size_bytes: int
    parent_sha256: str
    export_seconds: float
    details: dict = field(default_factory=dict, compare=False)
    reused: bool = False           # copied from an identical earlier export (pipeline.export_cache)


@dataclass(frozen=True)
class ExportRequest:
    module: object                 # torch.nn.Module in eval mode
    example: tuple                 # one sample batch of the declared shapes and dtypes, one array per input
    calibration: tuple             # calibration inputs, [N, ...] per input
    precision: str                 # fp32 | int8
    out_path: Path
    input_names: tuple[str, ...]   # declared order: the names every format's signature carries
    output_names: tuple[str, ...]
    parent_sha256: str
    quantize: object = None        # compress.quantize_stage.QuantizeConfig; None = defaults
    # Per input, the config.schema.DynamicDim exported as dynamic; () when none is.
    dynamic_dims: tuple = ()
    delegate: str = "xnnpack"      # formats whose delegate lives in the file lower to it ("none": not at all)
    source_kind: str = "pytorch"   # "keras" or "onnx": `module` is then a sources.foreign.ForeignModel

    @property
    def options(self):
        from edgepack.compress.quantize_stage import DEFAULT

        return self.quantize or DEFAULT

    @property
    def float_inputs(self) -> tuple[bool, ...]:
        """Which inputs are float: only those are calibrated and quantized as activations."""
        return tuple(np.issubdtype(a.dtype, np.floating) for a in self.example)

    def dims_record(self) -> list[dict]:
        """The manifest's `dynamic_dims`: each dim, naming its input when there are several."""
        several = len(self.input_names) > 1
        return [{**({"input": name} if several else {}), **d.model_dump()}
                for name, dims in zip(self.input_names, self.dynamic_dims) for d in dims]


def sha256_bytes_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


@contextmanager
def converting(fmt: str, stage: str, what: str, *, hint: str = ""):
    """A converter or quantizer failing on input that validated, as one ToolchainError
    line: "<fmt>: <what>: <exception type>: <its first line><hint>". An EdgepackError
    raised inside (a step's own check) passes through unchanged."""
    try:
        yield
    except EdgepackError:
        raise
    except Exception as e:
        raise ToolchainError(f"{fmt}: {what}: {type(e).__name__}: {first_line(e)}{hint}", format=fmt, stage=stage) from e


def export(fmt: str, request: ExportRequest) -> ModelArtifact:
    from edgepack.formats import get_format

    steps = get_format(fmt).steps_for(request.source_kind)
    if steps is None:
        raise ToolchainError(f"{fmt}: cannot be built from a {request.source_kind} source", format=fmt)
    step = steps.get(request.precision)
    if step is None:
        raise ToolchainError(f"{fmt}: precision {request.precision!r} is not supported; valid: {', '.join(steps)}", format=fmt)
    start = time.perf_counter()
    with converting(fmt, "export", f"export ({request.precision}) failed"):
        details = step(request)
    path = request.out_path
    if request.dynamic_dims and not (details or {}).get("dynamic_dims"):
        raise ToolchainError(f"{fmt}: the exporter did not apply dynamic_dims", format=fmt, stage="export")
    if not path.is_file():
        raise ToolchainError(f"{fmt}: the exporter wrote no file at {path}", format=fmt, stage="export")
    import zlib

    # What an app store or OTA update ships is compressed: weight sharing and sparsity
    # show there, not in the raw file size.
    details = {**(details or {}), "zipped_bytes": len(zlib.compress(path.read_bytes(), 9))}
    return ModelArtifact(
        path=path,
        format=fmt,
        precision=request.precision,
        sha256=sha256_bytes_of(path),
        size_bytes=path.stat().st_size,
        parent_sha256=request.parent_sha256,
        export_seconds=time.perf_counter() - start,
        details=dict(details or {}),
    )


def positional_outputs(module, input_names, names):
    """`module` returning its outputs as a tuple in declared order where its forward()
    returns a dict (one tensor stays one tensor): what formats that take outputs by
    position export (a .pte has no names; ONNX names them by position). Its forward()
    takes the declared inputs by name, so torch.export matches per-input dynamic_shapes."""
    import inspect

    import torch

    from edgepack.modelio import output_tensors

    class Positional(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            out = self.inner(*xs)
            return out if isinstance(out, torch.Tensor) else output_tensors(out, list(names))

    P = inspect.Parameter
    Positional.forward.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), *(P(n, P.POSITIONAL_OR_KEYWORD) for n in input_names)])
    wrapper = Positional(module)
    wrapper.training = False
    return wrapper


def dynamic_shapes_spec(dims) -> tuple:
    """torch.export's dynamic_shapes, one dict per input (`dims`: per input, its dynamic
    dims). Dims of the same name are one torch Dim: inputs sharing a batch dim stay equal."""
    import torch

    made: dict = {}

    def dim(d):
        if d.name not in made:
            made[d.name] = torch.export.Dim(d.name, min=d.min, max=d.max)
        return made[d.name]

    return tuple({d.dim: dim(d) for d in per_input} for per_input in dims)


def example_for(example: tuple, dims, *, at_max: bool) -> tuple:
    """The example inputs resized along each dynamic dim: to its max (ExecuTorch plans
    memory for the traced size's guards) or to max(2, min) (no 0/1 specialisation)."""
    out = []
    for x, per_input in zip(example, dims):
        shape = list(x.shape)
        for d in per_input:
            shape[d.dim] = d.max if at_max else max(2, d.min)
        resized = np.zeros(shape, dtype=x.dtype)
        index = tuple(slice(0, min(a, b)) for a, b in zip(shape, x.shape))
        resized[index] = x[index]
        out.append(resized)
    return tuple(out)
