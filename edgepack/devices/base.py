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

    def latency_dict(self) -> dict:
        return {
            "runner": self.runner,
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


class Runner(Protocol):
    name: str

    def available(self) -> bool: ...

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int) -> RunResult: ...
