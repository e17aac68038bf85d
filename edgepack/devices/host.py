"""Runs artifacts on this machine, in a child process executing the same runner script
that runs on devices: the figures are comparable, and a runtime that crashes (a
segfault in a native kernel) fails one artifact instead of the whole build."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgepack.devices.base import RUNNER_SCRIPT, RunResult, input_bytes, read_outputs, script_arguments, wire_files
from edgepack.errors import ToolchainError

TIMEOUT_S = 600


def result_from_json(runner: str, doc: dict, outputs: np.ndarray) -> RunResult:
    return RunResult(
        runner=runner,
        machine=doc.get("machine", platform.machine()),
        runtime=doc["runtime"],
        runtime_version=doc["runtime_version"],
        threads=doc["threads"],
        import_ms=doc["import_ms"],
        load_ms=doc["load_ms"],
        first_inference_ms=doc["first_inference_ms"],
        p50_ms=doc["p50_ms"],
        p90_ms=doc["p90_ms"],
        p99_ms=doc["p99_ms"],
        mean_ms=doc["mean_ms"],
        std_ms=doc["std_ms"],
        peak_rss_mb=doc["peak_rss_mb"],
        iterations=doc["iterations"],
        outputs=outputs,
        ops=doc.get("ops"),
        delegate=doc.get("delegate"),
    )


class HostRunner:
    name = "host"

    def available(self) -> bool:
        return True

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int,
            batch: int | None = None, op_profile: bool = False, delegate: str | None = None) -> RunResult:
        from edgepack.formats import get_format

        format_ = get_format(fmt)
        with tempfile.TemporaryDirectory(prefix="edgepack-run-") as tmp:
            tmp = Path(tmp)
            in_name, out_name = wire_files(inputs)
            (tmp / in_name).write_bytes(input_bytes(inputs))
            cmd = [sys.executable, str(RUNNER_SCRIPT), *script_arguments(
                format_, artifact=str(artifact), inputs=str(tmp / in_name), outputs=str(tmp / out_name),
                result=str(tmp / "result.json"), warmup=warmup, iterations=iterations, threads=threads,
                batch=batch, op_profile=op_profile, delegate=delegate)]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
            except subprocess.TimeoutExpired:
                raise ToolchainError(f"{fmt}: {artifact.name} did not finish on the host within {TIMEOUT_S} s", format=fmt, stage="run") from None
            result_file = tmp / "result.json"
            if not result_file.is_file():
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise ToolchainError(
                    f"{fmt}: the {fmt} runtime crashed running {artifact.name} on the host (exit {proc.returncode}): {tail}",
                    format=fmt, stage="run",
                )
            doc = json.loads(result_file.read_text())
            if not doc.get("ok"):
                raise ToolchainError(f"{fmt}: the {fmt} runtime rejected {artifact.name}: {doc.get('error')}", format=fmt, stage="run")
            outputs = read_outputs((tmp / out_name).read_bytes())
        return result_from_json(self.name, doc, outputs)
