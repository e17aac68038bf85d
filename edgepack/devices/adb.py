"""Profiles artifacts on an Android device over adb with the runtimes' own benchmark
binaries, where edgepack's Python runner cannot go (no Python on a phone):

    tflite      LiteRT's `benchmark_model --graph=... --num_threads=N --warmup_runs=N --num_runs=N`
    executorch  ExecuTorch's `executor_runner` / `xnn_executor_runner --model_path=... --num_executions=N`
    onnx        ONNX Runtime's `onnxruntime_perf_test -m times -r N -x THREADS -s -I model.onnx`

The device profile (or the caller) names where each binary lives on the device; edgepack
does not ship them. The binaries feed their own inputs (random or all-ones tensors) and
print timings, not outputs: an AdbBenchmark has latency figures only, and says that
parity was not checked. Parity on aarch64 comes from the qemu and ssh runners.

The parsers are plain functions over the tools' text output, tested against fixtures in
tests/data/adb/. Those fixtures were reconstructed from the tools' source (no phone and
none of these binaries could be run where this was written): see docs/devices.md.
"""

from __future__ import annotations

import re
import shlex
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.errors import ToolchainError

TIMEOUT_S = 900
DEVICE_DIR = "/data/local/tmp/edgepack"
# Where `adb push` puts the binaries in each project's Android instructions.
DEFAULT_BINARIES = {
    "tflite": "/data/local/tmp/benchmark_model",
    "executorch": "/data/local/tmp/xnn_executor_runner",
    "onnx": "/data/local/tmp/onnxruntime_perf_test",
}
TOOLS = {"tflite": "benchmark_model", "executorch": "executor_runner", "onnx": "onnxruntime_perf_test"}
NO_PARITY = "not checked: the runtime's benchmark binary feeds its own inputs and reports timings only"


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
class AdbBenchmark:
    """A device measurement over adb: timings from the runtime's own tool, no outputs."""

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
        return f"wall time on device {self.serial}, measured by {self.figures.tool}"

    def latency_dict(self) -> dict:
        f = self.figures

        def r(v, n=4):
            return None if v is None else round(v, n)

        return {
            "runner": self.runner,
            "timing": self.timing,
            "parity": self.parity,
            "tool": f.tool,
            "threads": f.threads,
            "iterations": f.iterations,
            "load_ms": r(f.init_ms, 3),
            "first_inference_ms": r(f.first_inference_ms, 3),
            "p50": r(f.p50_ms),
            "p90": r(f.p90_ms),
            "p99": r(f.p99_ms),
            "mean": r(f.mean_ms),
            "std": r(f.std_ms),
            "min": r(f.min_ms),
            "max": r(f.max_ms),
            "peak_rss_mb": r(f.peak_rss_mb, 1),
        }


# ----------------------------------------------------------------------------- parsers

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _stat_line(line: str) -> dict[str, float]:
    """`count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929` (and, in
    newer LiteRT, `p5=... median=... p95=...`), or `count=3 curr=5(all same)`."""
    return {k: float(v) for k, v in re.findall(r"\b(\w+)=" + _NUM, line)}


def parse_benchmark_model(text: str) -> BenchmarkFigures:
    """LiteRT/TFLite `benchmark_model` (tensorflow/lite/tools/benchmark). Its two
    "Running benchmark for at least N iterations" blocks are the warm-up and the timed
    runs, each closed by a stat line in microseconds."""
    stats, threads, init_ms, summary = [], None, None, {}
    for line in text.splitlines():
        body = re.sub(r"^(INFO|VERBOSE|WARNING): ", "", line.strip())
        if body.startswith("count="):
            stats.append(_stat_line(body))
        elif m := re.match(r"Num threads: \[(\d+)\]", body):
            threads = int(m.group(1))
        elif m := re.match(r"Initialized session in " + _NUM + r"\s*ms", body):
            init_ms = float(m.group(1))
        elif body.startswith(("Inference timings in us:", "Average inference timings in us:")):
            summary = {k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ()]+): " + _NUM, body.split(":", 1)[1])}
    if not stats or "count" not in stats[-1]:
        raise ToolchainError("benchmark_model: no timing statistics in its output (did it run?)", format="tflite", stage="run")
    timed = stats[-1]
    warm = stats[0] if len(stats) > 1 else {}
    us = 1e-3
    mean = timed.get("avg", timed.get("curr"))
    peak = None
    if m := re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init=" + _NUM + r" overall=" + _NUM, text):
        peak = float(m.group(2))
    first = summary.get("First inference")
    if first is None and warm:
        first = warm.get("first")
    return BenchmarkFigures(
        tool="benchmark_model",
        iterations=int(timed["count"]),
        mean_ms=mean * us,
        init_ms=init_ms if init_ms is not None else (summary["Init"] * us if "Init" in summary else None),
        first_inference_ms=None if first is None else first * us,
        warmup_mean_ms=warm.get("avg", warm.get("curr")) * us if warm else None,
        std_ms=timed.get("std", 0.0) * us,
        min_ms=timed.get("min", mean) * us,
        max_ms=timed.get("max", mean) * us,
        p50_ms=timed["median"] * us if "median" in timed else None,
        p95_ms=timed["p95"] * us if "p95" in timed else None,
        peak_rss_mb=peak,
        threads=threads,
    )


def parse_onnxruntime_perf_test(text: str) -> BenchmarkFigures:
    """ONNX Runtime's `onnxruntime_perf_test` (onnxruntime/test/perftest). Percentiles
    appear only with `-s`; they are printed in seconds, the averages in milliseconds."""
    def find(pattern: str) -> float | None:
        m = re.search(pattern + r"\s*" + _NUM, text)
        return float(m.group(1)) if m else None

    runs = find(r"Total inference requests:")
    mean = find(r"Average inference time cost:")
    if runs is None or mean is None:
        raise ToolchainError("onnxruntime_perf_test: no 'Average inference time cost' in its output (did it run?)",
                             format="onnx", stage="run")
    seconds = {name: find(rf"{name} Latency:") for name in ("Min", "Max", "P50", "P90", "P95", "P99")}
    ms = {k: None if v is None else v * 1e3 for k, v in seconds.items()}
    peak = find(r"Peak working set size:")
    threads = find(r"Setting intra_op_num_threads to")
    session_s = find(r"Session creation time cost:")
    return BenchmarkFigures(
        tool="onnxruntime_perf_test",
        iterations=int(runs),
        mean_ms=mean,
        init_ms=None if session_s is None else session_s * 1e3,
        first_inference_ms=find(r"First inference time cost:"),
        min_ms=ms["Min"], max_ms=ms["Max"], p50_ms=ms["P50"], p90_ms=ms["P90"], p95_ms=ms["P95"], p99_ms=ms["P99"],
        peak_rss_mb=None if peak is None else peak / 2**20,
        threads=None if threads is None else int(threads),
    )


def parse_executor_runner(text: str, *, warmup: int = 0) -> BenchmarkFigures:
    """ExecuTorch's `executor_runner` (examples/portable/executor_runner), also built as
    `xnn_executor_runner`. It has no warm-up flag: the first `warmup` of its
    per-iteration lines are dropped. Releases that print no per-iteration lines give
    only the total, hence only a mean."""
    iterations = [float(v) for v in re.findall(r"Iteration \d+ of \d+: " + _NUM + " ms", text)]
    total = re.search(r"Model executed successfully (\d+) time\(s\) in " + _NUM + " ms", text)
    if total is None:
        raise ToolchainError("executor_runner: no 'Model executed successfully' in its output (did it run?)",
                             format="executorch", stage="run")
    loaded = re.search(r"Model loaded in " + _NUM + " ms", text)
    threads = re.search(r"Resetting threadpool with num threads = (\d+)", text)
    common = {
        "tool": "executor_runner",
        "init_ms": float(loaded.group(1)) if loaded else None,
        "threads": int(threads.group(1)) if threads else None,
    }
    if not iterations:
        count, ms = int(total.group(1)), float(total.group(2))
        return BenchmarkFigures(iterations=count, mean_ms=ms / count, **common)
    timed = iterations[warmup:] or iterations
    return BenchmarkFigures(
        iterations=len(timed),
        mean_ms=statistics.fmean(timed),
        first_inference_ms=iterations[0],
        warmup_mean_ms=statistics.fmean(iterations[:warmup]) if warmup else None,
        std_ms=statistics.pstdev(timed),
        min_ms=min(timed), max_ms=max(timed),
        p50_ms=_percentile(timed, 50), p90_ms=_percentile(timed, 90), p99_ms=_percentile(timed, 99),
        **common,
    )


PARSERS = {"tflite": parse_benchmark_model, "onnx": parse_onnxruntime_perf_test, "executorch": parse_executor_runner}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# ----------------------------------------------------------------------------- runner


def benchmark_command(fmt: str, binary: str, model: str, *, warmup: int, iterations: int, threads: int) -> list[str]:
    """The command line each tool takes for one measurement (flags as in each project's
    documentation)."""
    if fmt == "tflite":
        return [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                f"--num_runs={iterations}", "--min_secs=0", "--warmup_min_secs=0"]
    if fmt == "executorch":
        return [binary, f"--model_path={model}", f"--num_executions={warmup + iterations}", f"--cpu_threads={threads}",
                "--print_output=none"]
    if fmt == "onnx":
        return [binary, "-m", "times", "-r", str(iterations), "-x", str(threads), "-y", "1", "-s", "-I", model]
    raise ToolchainError(f"the adb runner benchmarks tflite, onnx and executorch artifacts, not {fmt!r}", format=fmt, stage="run")


class AdbRunner:
    """Benchmarks artifacts on the Android device `serial` with the runtimes' own
    binaries at the paths in `binaries` (format -> path on the device)."""

    name = "adb"

    def __init__(self, serial: str, binaries: dict[str, str] | None = None, *, adb: str = "adb",
                 server_port: int | None = None, device_dir: str = DEVICE_DIR, timeout_s: float = TIMEOUT_S):
        if not serial:
            raise ToolchainError("adb: no device serial given (the profile's [reach] adb_serial)", stage="connect")
        self.serial = serial
        self.binaries = {**DEFAULT_BINARIES, **(binaries or {})}
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

    def run(self, artifact: Path, fmt: str, inputs=None, *, warmup: int, iterations: int, threads: int) -> AdbBenchmark:
        """`inputs` is accepted for the Runner signature and not used: the benchmark
        binaries generate their own."""
        artifact = Path(artifact)
        if fmt not in TOOLS:
            raise ToolchainError(f"the adb runner benchmarks {', '.join(TOOLS)} artifacts, not {fmt!r}", format=fmt, stage="run")
        if not artifact.is_file():
            raise ToolchainError(f"{fmt}: no artifact at {artifact}", format=fmt, stage="run")
        self.check_device()
        binary = self.binaries[fmt]
        probe = self._adb("shell", f"test -x {shlex.quote(binary)} && echo ok", what="looking for the benchmark binary")
        if probe.stdout.strip() != "ok":
            raise ToolchainError(
                f"adb: {binary} is not an executable on {self.serial}: push the {TOOLS[fmt]} binary for this device's ABI "
                f"there (`adb push {TOOLS[fmt]} {binary}`), or name its path in the profile", format=fmt, stage="run")
        remote = f"{self.device_dir}/{artifact.name}"
        self._adb("shell", f"mkdir -p {shlex.quote(self.device_dir)}", what="creating the work folder")
        try:
            self._adb("push", str(artifact), remote, what=f"pushing {artifact.name}")
            command = benchmark_command(fmt, binary, remote, warmup=warmup, iterations=iterations, threads=threads)
            line = " ".join(shlex.quote(w) for w in command)
            # `adb shell` returns the remote status only on newer adb; the parser is the judge.
            proc = self._adb("shell", line + " 2>&1", what=f"running {TOOLS[fmt]}", check=False)
        finally:
            self._adb("shell", f"rm -f {shlex.quote(remote)}", what="cleaning up", check=False)
        text = proc.stdout
        parser = PARSERS[fmt]
        figures = parser(text, warmup=warmup) if fmt == "executorch" else parser(text)
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
