"""Runs artifacts on an emulated aarch64 CPU: the host runner's protocol under
`qemu-aarch64 -cpu <profile.qemu_cpu>`, in the environment sysroot.py prepares.

Artifacts run in the same runner_script.py as everywhere else, on the sysroot's aarch64
Python; a format with a native runner (ExecuTorch: et_runner) runs in that program,
which speaks the same protocol. Either way the result is a RunResult like the host runner's.

What emulation measures: whether the artifact loads and computes the same outputs on
aarch64 with the kernels that CPU model selects, and, with `count_instructions`, the
number and mix of guest instructions in the timed loop. Its wall time is the emulator's
(hundreds of times the host's, and blind to the microarchitecture): RunResult labels it
as emulated wall time, never as latency.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgepack.config.schema import DeviceProfile
from edgepack.devices.base import (RUNNER_SCRIPT, RunResult, check_native_batch, input_bytes, read_outputs, script_arguments,
                                   stderr_reason, wire_files)
from edgepack.devices.host import result_from_json
from edgepack.errors import ToolchainError

TIMEOUT_S = 900
COUNT_METHOD = "guest instructions between marker syscalls around the timed loop (qemu TCG plugin)"


class QemuRunner:
    name = "qemu"

    def __init__(self, profile: DeviceProfile, *, count_instructions: bool = False, timeout_s: float = TIMEOUT_S):
        self.profile = profile
        self.cpu = profile.qemu_cpu
        self.count_instructions = count_instructions
        self.timeout_s = timeout_s

    def available(self) -> bool:
        from edgepack.devices.sysroot import find_env

        env = find_env()
        return env is not None and self.cpu in env.cpu_models()

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int,
            batch: int | None = None, op_profile: bool = False, delegate: str | None = None) -> RunResult:
        from edgepack.devices.sysroot import require_env
        from edgepack.formats import get_format

        format_ = get_format(fmt)
        if format_.native_runner:
            check_native_batch(format_, batch)
        env = require_env()
        root = env.cpu_root(self.cpu)
        artifact = Path(artifact).resolve()
        if not artifact.is_file():
            raise ToolchainError(f"{fmt}: no artifact at {artifact}", format=fmt, stage="run")
        with tempfile.TemporaryDirectory(prefix="edgepack-qemu-") as tmp:
            tmp = Path(tmp)
            in_name, out_name = wire_files(inputs)
            (tmp / in_name).write_bytes(input_bytes(inputs))
            protocol = script_arguments(
                format_, artifact=str(artifact), inputs=str(tmp / in_name), outputs=str(tmp / out_name),
                result=str(tmp / "result.json"), warmup=warmup, iterations=iterations, threads=threads,
                batch=batch, op_profile=op_profile and not format_.native_runner, delegate=delegate)
            qemu = qemu_prefix(root, self.cpu)
            if self.count_instructions and shutil.which("setarch"):
                # Without address randomization the guest's memory layout, and with it
                # pointer hashing and memcpy alignment paths, repeats from run to run.
                qemu = ["setarch", "-R", *qemu]
            counts_file = tmp / "instructions.json"
            if self.count_instructions:
                qemu += ["-plugin", f"{env.plugin},outfile={counts_file}"]
            if format_.native_runner:
                cmd = [*qemu, str(env.root / "bin" / format_.native_runner), *protocol]   # built by sysroot.setup
            else:
                cmd = [*qemu, str(root / "usr" / "bin" / "python3.11"), str(RUNNER_SCRIPT), *protocol]
            proc = self._execute(cmd, tmp, env.site, fmt, artifact)
            result_file = tmp / "result.json"
            if not result_file.is_file():
                raise ToolchainError(
                    f"{fmt}: the {fmt} runtime crashed running {artifact.name} under qemu {self.cpu} "
                    f"(exit {proc.returncode}): {stderr_reason(proc.stderr)}",
                    format=fmt, stage="run",
                )
            doc = json.loads(result_file.read_text())
            if not doc.get("ok"):
                raise ToolchainError(
                    f"{fmt}: the aarch64 {fmt} runtime rejected {artifact.name} under qemu {self.cpu}: {doc.get('error')}",
                    format=fmt, stage="run",
                )
            outputs = read_outputs((tmp / out_name).read_bytes())
            counts = self._read_counts(counts_file, fmt, artifact, iterations, threads) if self.count_instructions else None
        base = result_from_json(self.name, doc, outputs)
        return _with(base, emulated_cpu=self.cpu, instructions=counts)

    def _execute(self, cmd: list[str], tmp: Path, site: Path, fmt: str, artifact: Path) -> subprocess.CompletedProcess:
        guest_env = guest_environment(site, home=tmp, markers=self.count_instructions)
        # Own session so a timeout kills qemu and anything it started; cwd in the temporary
        # folder so a crashing guest's core file goes away with it.
        proc = subprocess.Popen(cmd, cwd=tmp, env=guest_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ToolchainError(
                f"{fmt}: {artifact.name} did not finish under qemu {self.cpu} within {self.timeout_s:g} s",
                format=fmt, stage="run",
            ) from None
        except BaseException:  # interrupted: qemu runs in its own session, so stop it here
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    def _read_counts(self, path: Path, fmt: str, artifact: Path, iterations: int, threads: int) -> dict:
        if not path.is_file():
            raise ToolchainError(f"{fmt}: the instruction-count plugin wrote nothing for {artifact.name}", format=fmt, stage="run")
        doc = json.loads(path.read_text())
        if doc.get("windows") != 1 or not doc.get("balanced"):
            raise ToolchainError(
                f"{fmt}: expected one counted window around the timed loop of {artifact.name}, "
                f"the plugin saw {doc.get('windows')} (balanced: {doc.get('balanced')})",
                format=fmt, stage="run",
            )
        window = doc["window"]
        total = window["instructions"]
        return {
            "cpu": self.cpu,
            "method": COUNT_METHOD,
            "iterations": iterations,
            # The plugin's counters are shared by all guest threads without atomics.
            "exact": threads == 1,
            "window": window,
            "per_inference": total / iterations,
            "simd_fp_share": window["simd_fp"] / total if total else 0.0,
            "dotprod_per_inference": window["dotprod"] / iterations,
            "mmla_per_inference": window["mmla"] / iterations,
        }


def qemu_prefix(root: Path, cpu: str) -> list[str]:
    """The command words that run an aarch64 program of the prepared environment on the
    emulated `cpu`; `root` is that model's `-L` root (Arm64Env.cpu_root)."""
    return ["qemu-aarch64", "-cpu", cpu, "-L", str(root)]


def guest_environment(site: Path, *, home: Path, markers: bool = False) -> dict[str, str]:
    """The whole environment of an emulated run. qemu-user hands its own environment to
    the guest, so this starts from nothing: the host's PYTHONPATH, PYTHONHOME or
    virtualenv can never leak into the aarch64 Python."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": str(home),
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
        # Deterministic hashing keeps dict and set layouts, and so instruction counts,
        # identical from run to run; no bytecode writes keep the shared cache read-only.
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # numpy's OpenBLAS starts a worker thread per host core at import, and the
        # instruction counter sums every guest thread: no thread beyond the runtime's own
        # may run inside the counted window. Inference never calls numpy's BLAS.
        "OPENBLAS_NUM_THREADS": "1",
    }
    if markers:
        env["EDGEPACK_MARKERS"] = "1"
    return env


def _with(result: RunResult, **changes) -> RunResult:
    from dataclasses import replace

    return replace(result, **changes)

