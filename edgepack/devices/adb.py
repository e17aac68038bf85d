"""Profiles artifacts on an Android device over adb with the runtimes' own benchmark
binaries, where edgepack's Python runner cannot go (no Python on a phone):

    tflite      LiteRT's `benchmark_model --graph=... --num_threads=N --warmup_runs=N --num_runs=N`
    executorch  ExecuTorch's `executor_runner` / `xnn_executor_runner --model_path=... --num_executions=N`
    onnx        ONNX Runtime's `onnxruntime_perf_test -m times -r N -x THREADS -s -I model.onnx`

Each format names its tool, the tool's command line and the parser of its output
(Format.adb, in edgepack.formats). The device profile (or the caller) names where each
binary lives on the device; edgepack does not ship them. The binaries feed their own
inputs (random or all-ones tensors) and print timings, not outputs: the RunResult of an
adb run has latency figures only (None where the tool prints none), `outputs` is None,
and its latency row says that parity was not checked. Parity on aarch64 comes from the
qemu and ssh runners.

The parsers (in the format modules) are plain functions over the tools' text output, tested against fixtures in
tests/data/adb/. Those fixtures were reconstructed from the tools' source (no phone and
none of these binaries could be run where this was written): see docs/devices.md.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.devices.base import NO_PARITY, RunResult
from edgepack.errors import ToolchainError
from edgepack.formats.base import BenchmarkFigures

TIMEOUT_S = 900
DEVICE_DIR = "/data/local/tmp/edgepack"

__all__ = ["NO_PARITY", "AdbBenchmark", "AdbRunner", "BenchmarkFigures", "benchmark_command"]


@dataclass(frozen=True)
class AdbBenchmark:
    """What one benchmark binary said on the device, as it said it."""

    serial: str
    format: str
    figures: BenchmarkFigures
    command: str
    raw_output: str = field(repr=False)
    runner: str = "adb"
    parity: str = NO_PARITY
    outputs: None = None

    @property
    def timing(self) -> str:
        return self.run_result().timing

    def run_result(self) -> RunResult:
        """The figures on the runners' common result, None where the tool prints none
        (threads included: a row states what the tool reported, not what was asked)."""
        f = self.figures
        return RunResult(
            runner=self.runner, machine="unknown", runtime=f.tool, runtime_version="unknown",
            threads=f.threads, import_ms=None, load_ms=f.init_ms, first_inference_ms=f.first_inference_ms,
            p50_ms=f.p50_ms, p90_ms=f.p90_ms, p99_ms=f.p99_ms, mean_ms=f.mean_ms, std_ms=f.std_ms,
            peak_rss_mb=f.peak_rss_mb, iterations=f.iterations, outputs=None,
            tool=f.tool, device=self.serial, min_ms=f.min_ms, max_ms=f.max_ms,
        )

    def latency_dict(self) -> dict:
        return self.run_result().latency_dict()


def _tool(fmt: str):
    from edgepack.formats import get_format

    tool = get_format(fmt).adb
    if tool is None:
        raise ToolchainError(f"{fmt}: no benchmark binary is known for this format; the adb runner cannot run it",
                             format=fmt, stage="run")
    return tool


def benchmark_command(fmt: str, binary: str, model: str, *, warmup: int, iterations: int, threads: int,
                      delegate: str | None = None) -> list[str]:
    """The command line the format's tool takes for one measurement (flags as in each
    project's documentation)."""
    return _tool(fmt).command(binary, model, warmup=warmup, iterations=iterations, threads=threads, delegate=delegate)


class AdbRunner:
    """Benchmarks artifacts on the Android device `serial` with the runtimes' own
    binaries at the paths in `binaries` (format -> path on the device; each format's
    default otherwise)."""

    name = "adb"

    def __init__(self, serial: str, binaries: dict[str, str] | None = None, *, adb: str = "adb",
                 server_port: int | None = None, device_dir: str = DEVICE_DIR, timeout_s: float = TIMEOUT_S):
        if not serial:
            raise ToolchainError("adb: no device serial given (the profile's [reach] adb_serial)", stage="connect")
        self.serial = serial
        self.binaries = dict(binaries or {})
        self.adb = adb
        self.server_port = server_port
        self.device_dir = device_dir
        self.timeout_s = timeout_s

    def available(self) -> bool:
        try:
            self.check_device()
        except ToolchainError:
            return False
        return True

    def devices(self) -> dict[str, str]:
        """serial -> state ("device", "unauthorized", "offline", ...) as `adb devices` lists them."""
        out = self._adb("devices", what="listing devices", serial=False).stdout
        found = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                found[parts[0]] = parts[1]
        return found

    def check_device(self) -> None:
        listed = self.devices()
        state = listed.get(self.serial)
        if state is None:
            others = ", ".join(f"{s} ({st})" for s, st in sorted(listed.items())) or "none"
            raise ToolchainError(f"adb: no device with serial {self.serial!r}; connected: {others}", stage="connect")
        if state != "device":
            hint = " (accept the USB debugging prompt on the phone)" if state == "unauthorized" else ""
            raise ToolchainError(f"adb: device {self.serial} is {state}{hint}", stage="connect")

    def run(self, artifact: Path, fmt: str, inputs=None, *, warmup: int, iterations: int, threads: int,
            batch: int | None = None, op_profile: bool = False, delegate: str | None = None) -> RunResult:
        """`inputs` is accepted for the Runner protocol and not used: the benchmark
        binaries generate their own at the model's declared shape, so a `batch` other than
        that cannot be asked for. No tool reports per-operator times here (`ops` is None).
        The result's `outputs` is None."""
        return self.benchmark(artifact, fmt, warmup=warmup, iterations=iterations, threads=threads,
                              batch=batch, delegate=delegate).run_result()

    def benchmark(self, artifact: Path, fmt: str, *, warmup: int, iterations: int, threads: int,
                  batch: int | None = None, delegate: str | None = None) -> AdbBenchmark:
        artifact = Path(artifact)
        tool = _tool(fmt)
        if batch not in (None, 1):
            raise ToolchainError(f"{fmt}: {tool.tool} feeds the model its own inputs at the declared shape; "
                                 f"a batch of {batch} cannot be run over adb", format=fmt, stage="run")
        if not artifact.is_file():
            raise ToolchainError(f"{fmt}: no artifact at {artifact}", format=fmt, stage="run")
        self.check_device()
        binary = self.binaries.get(fmt, tool.default_binary)
        probe = self._adb("shell", f"test -x {shlex.quote(binary)} && echo ok", what="looking for the benchmark binary")
        if probe.stdout.strip() != "ok":
            raise ToolchainError(
                f"adb: {binary} is not an executable on {self.serial}: push the {tool.tool} binary for this device's ABI "
                f"there (`adb push {tool.tool} {binary}`), or name its path in the profile", format=fmt, stage="run")
        remote = f"{self.device_dir}/{artifact.name}"
        self._adb("shell", f"mkdir -p {shlex.quote(self.device_dir)}", what="creating the work folder")
        try:
            self._adb("push", str(artifact), remote, what=f"pushing {artifact.name}")
            command = tool.command(binary, remote, warmup=warmup, iterations=iterations, threads=threads, delegate=delegate)
            line = " ".join(shlex.quote(w) for w in command)
            # `adb shell` returns the remote status only on newer adb; the parser is the judge.
            proc = self._adb("shell", line + " 2>&1", what=f"running {tool.tool}", check=False)
        finally:
            self._adb("shell", f"rm -f {shlex.quote(remote)}", what="cleaning up", check=False)
        text = proc.stdout
        figures = tool.parse(text, warmup=warmup)
        return AdbBenchmark(serial=self.serial, format=fmt, figures=figures, command=line, raw_output=text)

    def _adb(self, *args: str, what: str, serial: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        exe = shutil.which(self.adb)
        if exe is None:
            raise ToolchainError(f"adb: {self.adb!r} is not installed (apt package adb, or Android SDK platform-tools)", stage="connect")
        argv = [exe]
        if self.server_port:
            argv += ["-P", str(self.server_port)]
        if serial:
            argv += ["-s", self.serial]
        try:
            proc = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"adb: {what} on {self.serial} did not finish within {self.timeout_s:g} s", stage="run") from None
        if check and proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise ToolchainError(f"adb: {what} on {self.serial} failed: {tail}", stage="connect")
        return proc
