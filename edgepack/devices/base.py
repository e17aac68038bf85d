"""The one protocol every runner keeps (host, qemu, ssh, adb), and what each returns,
whatever transport carried the artifact to its runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgepack.formats import Format

RUNNER_SCRIPT = Path(__file__).with_name("runner_script.py")


@dataclass(frozen=True)
class RunResult:
    """One run of one artifact. Runners that execute the runner script (host, qemu, ssh)
    fill every figure and `outputs`. The adb runner reports what the runtime's own
    benchmark binary prints: None where the tool is silent (import time, some
    percentiles, memory), and `outputs` is None because the tool feeds its own inputs, so
    no parity can be computed from an adb run."""

    runner: str                 # host, qemu, ssh, adb
    machine: str                # what the runtime ran on (x86_64, aarch64; "unknown" over adb)
    runtime: str
    runtime_version: str
    threads: int | None
    import_ms: float | None
    load_ms: float | None
    first_inference_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float
    std_ms: float | None
    peak_rss_mb: float | None
    iterations: int
    outputs: np.ndarray | None = field(repr=False, compare=False)
    # Set by emulating runners: the qemu CPU model the figures come from. Their timings
    # are then the emulator's wall time, which is not a device's latency.
    emulated_cpu: str | None = None
    # Guest instructions over the timed loop, when the runner counted them (see
    # devices/qemu.py): deterministic where wall time under emulation is not.
    instructions: dict | None = None
    # Time per operator type, where the runtime exposes it (ONNX Runtime's profiler).
    ops: list | None = None
    # Set by the adb runner: the benchmark binary that measured, the device's serial, and
    # the extremes it reports.
    tool: str | None = None
    device: str | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    # What the runtime reported running the artifact with (runner_script's "delegate"):
    # {"used": "xnnpack" | "none", "detail": ...}; None where it reports nothing (a
    # delegate chosen at export, a native runner, a benchmark binary).
    delegate: dict | None = None

    @property
    def parity(self) -> str | None:
        """Why no parity can be computed from this run, or None when it can."""
        return NO_PARITY if self.outputs is None and self.tool else None

    @property
    def timing(self) -> str:
        if self.tool:
            return f"wall time on device {self.device}, measured by {self.tool}"
        if self.emulated_cpu:
            return f"emulated wall time under qemu ({self.emulated_cpu}); not device latency"
        return f"wall time on the {self.runner} runner"

    def latency_dict(self) -> dict:
        if self.tool:
            return self._tool_latency_dict()
        return {
            "runner": self.runner,
            "timing": self.timing,
            "machine": self.machine,
            "runtime": f"{self.runtime} {self.runtime_version}",
            "threads": self.threads,
            "iterations": self.iterations,
            "import_ms": round(self.import_ms, 1),
            "load_ms": round(self.load_ms, 3),
            "first_inference_ms": round(self.first_inference_ms, 3),
            "p50": round(self.p50_ms, 4),
            "p90": round(self.p90_ms, 4),
            "p99": round(self.p99_ms, 4),
            "mean": round(self.mean_ms, 4),
            "std": round(self.std_ms, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }

    def _tool_latency_dict(self) -> dict:
        def r(v, n=4):
            return None if v is None else round(v, n)

        return {
            "runner": self.runner,
            "timing": self.timing,
            "parity": self.parity,
            "tool": self.tool,
            "threads": self.threads,
            "iterations": self.iterations,
            "load_ms": r(self.load_ms, 3),
            "first_inference_ms": r(self.first_inference_ms, 3),
            "p50": r(self.p50_ms),
            "p90": r(self.p90_ms),
            "p99": r(self.p99_ms),
            "mean": r(self.mean_ms),
            "std": r(self.std_ms),
            "min": r(self.min_ms),
            "max": r(self.max_ms),
            "peak_rss_mb": r(self.peak_rss_mb, 1),
        }


def wire_files(inputs) -> tuple[str, str]:
    """The runner script's input and output file names for `inputs`: one array travels as
    .npy (its one output comes back as .npy); a {name: array} mapping of a model's inputs
    as .npz (every output comes back by name in a .npz)."""
    return ("inputs.npz", "outputs.npz") if isinstance(inputs, dict) else ("inputs.npy", "outputs.npy")


def input_bytes(inputs) -> bytes:
    import io

    buf = io.BytesIO()
    if isinstance(inputs, dict):
        np.savez(buf, **{n: np.ascontiguousarray(a) for n, a in inputs.items()})
    else:
        np.save(buf, np.ascontiguousarray(inputs, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def read_outputs(data: bytes):
    """The runner script's outputs: one array (.npy), or {runtime name: array} (.npz)."""
    import io

    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        return {n: loaded[n] for n in loaded.files}


def run_declared(runner, artifact: Path, fmt: str, inputs: tuple, *, input_names, output_names, **options) -> RunResult:
    """Run an artifact on the model's inputs (a tuple in declared order) and return its
    outputs as a tuple in declared order. A one-input, one-output model travels as one
    array (the protocol every runner, native ones included, speaks); a model with several
    inputs or outputs as arrays named by the declared names, its outputs read back by the
    runtime's names (LiteRT and ONNX carry the declared ones) or by position (ExecuTorch)."""
    import dataclasses

    from edgepack.modelio import ordered_outputs

    several = len(inputs) > 1 or len(output_names) > 1
    if several:
        from edgepack.formats import get_format

        native = get_format(fmt).native_runner
        if native and getattr(runner, "name", "") == "qemu":
            from edgepack.errors import ToolchainError

            raise ToolchainError(f"{fmt}: the native {native} feeds one input and reads one output; this model has "
                                 f"{len(inputs)} input(s) and {len(output_names)} output(s)", format=fmt, stage="run")
    wire = dict(zip(input_names, inputs)) if several else inputs[0]
    result = runner.run(artifact, fmt, wire, **options)
    if result.outputs is None:
        return result
    got = result.outputs if isinstance(result.outputs, dict) else {"output_0": result.outputs}
    try:
        outputs = ordered_outputs(got, list(output_names))
    except ValueError as e:
        from edgepack.errors import ToolchainError

        raise ToolchainError(f"{fmt}: {artifact.name}: {e}", format=fmt, stage="run") from None
    return dataclasses.replace(result, outputs=outputs)


NO_PARITY = "not checked: the runtime's benchmark binary feeds its own inputs and reports timings only"


def script_arguments(fmt: Format, *, artifact: str, inputs: str, outputs: str, result: str, warmup: int,
                     iterations: int, threads: int, batch: int | None = None, op_profile: bool = False,
                     loader_file: str | None = None, delegate: str | None = None) -> list[str]:
    """The runner script's command-line protocol (runner_script.py; a native runner reads
    the same `--key value` words, so it gets neither --op-profile nor a loader).
    `loader_file` is where the runner put the format's loader file, when it has one.
    `delegate` travels only for formats whose runtime applies it when loading: a
    delegate chosen at export is in the file (and the native runner never gets one)."""
    words = [
        "--artifact", artifact, "--format", fmt.name, *fmt.loader_args(loader_file),
        "--inputs", inputs, "--outputs", outputs, "--result", result,
        "--warmup", str(warmup), "--iterations", str(iterations), "--threads", str(threads),
    ]
    if batch is not None:
        words += ["--batch", str(batch)]
    if delegate is not None and not fmt.delegate_in_file:
        words += ["--delegate", delegate]
    return words + (["--op-profile"] if op_profile else [])


def check_native_batch(fmt: Format, batch: int | None) -> None:
    """A native runner (Format.native_runner) runs one sample per call: a larger batch
    is refused, not run one row at a time and reported as a batch."""
    if batch not in (None, 1):
        from edgepack.errors import ToolchainError

        raise ToolchainError(f"{fmt.name}: the native {fmt.native_runner} runs one sample per call; "
                             f"a batch of {batch} cannot be run with it", format=fmt.name, stage="run")


def stderr_reason(stderr: str) -> str:
    """The line of a runner's stderr that says why it failed: qemu's own report of a fatal
    signal, else the last line that is not a runtime's informational chatter."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("qemu:"):
            return line
    for line in reversed(lines):
        if not line.startswith(("INFO:", "I ", "W ")):
            return line
    return "no output"


class Runner(Protocol):
    """Runs one artifact of format `fmt` (a registered format's name) on `inputs`
    ([N, ...] float32, or {input name: array} in declared order for a model's several
    inputs; `outputs` is then {runtime output name: array}): `warmup` untimed and `iterations` timed calls on the first sample,
    then every row for the outputs. `batch` rows go into each call (None: one, as
    deployed; more to check a dynamic batch). `op_profile` asks for time per operator
    where the runtime exposes it (RunResult.ops, else None). `delegate` (a value of the
    format's Format.delegates; None: the runtime's default) is what the runtime runs the
    artifact with. A runner that cannot honour a request raises ToolchainError naming it
    rather than measuring something else."""

    name: str

    def available(self) -> bool: ...

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int,
            batch: int | None = None, op_profile: bool = False, delegate: str | None = None) -> RunResult: ...
