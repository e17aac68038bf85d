"""What every runner returns, whatever transport carried the artifact to its runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

RUNNER_SCRIPT = Path(__file__).with_name("runner_script.py")


@dataclass(frozen=True)
class RunResult:
    runner: str                 # host, qemu, ssh, adb
    machine: str                # what the runtime ran on (x86_64, aarch64)
    runtime: str
    runtime_version: str
    threads: int
    import_ms: float
    load_ms: float
    first_inference_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    peak_rss_mb: float
    iterations: int
    outputs: np.ndarray = field(repr=False, compare=False)
    # Set by emulating runners: the qemu CPU model the figures come from. Their timings
    # are then the emulator's wall time, which is not a device's latency.
    emulated_cpu: str | None = None
    # Guest instructions over the timed loop, when the runner counted them (see
    # devices/qemu.py): deterministic where wall time under emulation is not.
    instructions: dict | None = None
    # Time per operator type, where the runtime exposes it (ONNX Runtime's profiler).
    ops: list | None = None

    @property
    def timing(self) -> str:
        if self.emulated_cpu:
            return f"emulated wall time under qemu ({self.emulated_cpu}); not device latency"
        return f"wall time on the {self.runner} runner"

    def latency_dict(self) -> dict:
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
    name: str

    def available(self) -> bool: ...

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int) -> RunResult: ...
