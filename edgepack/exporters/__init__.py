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
    example: np.ndarray            # one input of the declared shape
    calibration: np.ndarray        # calibration inputs, [N, ...]
    precision: str                 # fp32 | int8
    out_path: Path
    input_name: str
    output_name: str
    parent_sha256: str
    quantize: object = None        # compress.quantize_stage.QuantizeConfig; None = defaults
    dynamic_dims: tuple = ()       # config.schema.DynamicDim: dims exported as dynamic
    delegate: str = "xnnpack"      # formats whose delegate lives in the file lower to it ("none": not at all)

    @property
    def options(self):
        from edgepack.compress.quantize_stage import DEFAULT

        return self.quantize or DEFAULT


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

    steps = get_format(fmt).precisions
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


def dynamic_shapes_spec(dims, rank: int):
    """torch.export's dynamic_shapes for the single input, and a trace example shape
    helper: each dynamic dim traced at `trace_size(d)` to avoid 0/1 specialisation."""
    import torch

    return ({d.dim: torch.export.Dim(d.name, min=d.min, max=d.max) for d in dims},)


def example_for(example: np.ndarray, dims, *, at_max: bool) -> np.ndarray:
    """The example input resized along each dynamic dim: to its max (ExecuTorch plans
    memory for the traced size's guards) or to max(2, min) (no 0/1 specialisation)."""
    shape = list(example.shape)
    for d in dims:
        shape[d.dim] = d.max if at_max else max(2, d.min)
    out = np.zeros(shape, dtype=np.float32)
    index = tuple(slice(0, min(a, b)) for a, b in zip(shape, example.shape))
    out[index] = example[index]
    return out
