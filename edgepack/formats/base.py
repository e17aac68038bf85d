"""What an export format is to edgepack: one frozen object naming everything that differs
from one format to another, so the build, the runners and the release read it instead of
matching format names.

Nothing here imports a toolchain. The exporter steps, signature readers and parsers a
Format names are plain callables; `lazy("module:function")` stands for one whose module
loads a converter, imported the first time it is called.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

# The runner script is run as `python3 runner_script.py --format NAME`: a format's name
# travels on a command line and becomes a file name on devices.
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class lazy:  # noqa: N801 - reads as a function at the call site
    """A function named by "module:attribute", imported when first called."""

    ref: str

    def __post_init__(self):
        if ":" not in self.ref:
            raise ValueError(f"lazy reference {self.ref!r}: expected 'module:function'")

    def resolve(self) -> Callable:
        module, attr = self.ref.split(":", 1)
        return getattr(importlib.import_module(module), attr)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class BenchmarkFigures:
    """What one benchmark tool's output says, in milliseconds; None where it is silent."""

    tool: str
    iterations: int
    mean_ms: float
    init_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    threads: int | None = None


@dataclass(frozen=True)
class AdbTool:
    """The runtime's own benchmark binary, for phones where Python cannot go.

    command(binary, model, *, warmup, iterations, threads, delegate=None) -> argv on the device;
    parse(text, *, warmup) -> BenchmarkFigures from what it printed."""

    tool: str                       # the binary's name, as its project builds it
    default_binary: str             # where `adb push` puts it in the project's instructions
    command: Callable[..., list[str]]
    parse: Callable[..., BenchmarkFigures]


@dataclass(frozen=True)
class Format:
    """One export format.

    precisions:     each precision the format supports -> the step that writes the artifact
                    for it: step(ExportRequest) -> details dict (exporters.export wraps every
                    step's converter failures into one ToolchainError line).
    signature:      signature(path, export_details) -> {"inputs": [...], "outputs": [...]},
                    what the runtime sees at the artifact's boundary (see `tensor_io`).
    loader:         the runner script's built-in loader for this format (a name in its
                    LOADERS), or None with `loader_file`: a Python file using only the
                    standard library, numpy and the runtime, defining
                    `load(path, threads) -> (run, runtime_name, runtime_version)` and
                    optionally `IMPORTS` (modules whose import time is the runtime's).
                    Runners ship it beside the script.
    native_runner:  on aarch64, run with this native program of the emulated environment
                    instead of the Python script ("et_runner"), or None.
    aarch64_wheels: pip name -> version installed into the emulated aarch64 environment.
    board_modules:  module the loader imports -> what to `pip install` on a board lacking it.
    adb:            the benchmark binary driven over adb, or None (adb cannot run it).
    card:           the model card's "how to load it" snippet, a str.format template with
                    file, in_name, in_shape, in_numel, in_shape_kt, in_bytes, out_bytes,
                    in_desc, out_desc, quantize, dequantize. It loads the artifact the way
                    the build verified it with the format's default delegate.
    card_without_delegate: the same for an artifact verified without a delegate, where
                    loading it so differs (empty: `card` serves both).
    toolchain:      the Python packages whose versions shape its artifacts (the manifest
                    records them).
    delegates:      the values a target's `delegate` may take for this format, the default
                    first ("none": the runtime's own CPU kernels).
    delegate_in_file: the delegate is chosen at export and lives in the file (ExecuTorch's
                    lowering); otherwise the runtime applies it when loading, and runners
                    pass it to the loader (`--delegate`).
    sources:        the non-PyTorch source kinds the format is built from ("keras",
                    "onnx"; config.schema.ModelSource.kind) -> their precisions' steps, as
                    `precisions` is for a PyTorch model. A kind not listed cannot reach
                    the format (edgepack.unreachable says so at plan time).
    """

    name: str
    extension: str
    runtime: str
    precisions: Mapping[str, Callable[[Any], dict]]
    signature: Callable[[Path, dict], dict]
    loader: str | None = None
    loader_file: Path | None = None
    native_runner: str | None = None
    aarch64_wheels: Mapping[str, str] = field(default_factory=dict)
    board_modules: Mapping[str, str] = field(default_factory=dict)
    adb: AdbTool | None = None
    card: str = ""
    card_without_delegate: str = ""
    toolchain: tuple[str, ...] = ()
    delegates: tuple[str, ...] = ("none",)
    delegate_in_file: bool = False
    sources: Mapping[str, Mapping[str, Callable[[Any], dict]]] = field(default_factory=dict)

    def steps_for(self, kind: str) -> Mapping[str, Callable[[Any], dict]] | None:
        """The precision -> step map for a source of `kind`, or None when it cannot reach the format."""
        return self.precisions if kind == "pytorch" else self.sources.get(kind)

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"format name {self.name!r}: lowercase letters, digits, '-' and '_', starting with a letter")
        if not self.extension.startswith(".") or len(self.extension) < 2:
            raise ValueError(f"format {self.name}: extension {self.extension!r} must start with '.'")
        if not self.precisions:
            raise ValueError(f"format {self.name}: no precisions")
        if not self.delegates:
            raise ValueError(f"format {self.name}: no delegates (give at least \"none\")")
        if (self.loader is None) == (self.loader_file is None):
            raise ValueError(f"format {self.name}: give exactly one of loader (a built-in loader name) and loader_file")

    def loader_args(self, loader_file: str | None = None) -> list[str]:
        """The runner script's arguments that pick this format's loader; `loader_file` is
        where the runner put the loader file (defaults to it on this machine)."""
        if self.loader_file is None:
            return [] if self.loader == self.name else ["--loader", self.loader]
        return ["--loader-file", loader_file or str(self.loader_file)]


def tensor_io(name: str, shape, dtype: str, scale: float | None = None, zero_point: int | None = None) -> dict:
    """One tensor of a signature: a string in `shape` names a dynamic dimension; int8 I/O
    carries its affine parameters, real = scale * (q - zero_point)."""
    quant = None if not scale else {"scale": float(scale), "zero_point": int(zero_point or 0)}
    return {"name": name, "shape": shape, "dtype": dtype, "quantization": quant}


# Shared by the benchmark-output parsers of the format modules.
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
