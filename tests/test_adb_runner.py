"""The adb runner's parsers against the benchmark tools' output, and its device checks
against the real `adb` binary.

The fixtures in tests/data/adb/ were reconstructed from the tools' source, not recorded
(their headers say so): no phone is reachable here and none of the three binaries ships
in a package that installs here. What is real: the `adb` client and server, asked for a
device that is not there.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from edgepack.devices.adb import NO_PARITY, AdbBenchmark, AdbRunner, benchmark_command
from edgepack.errors import ToolchainError
from edgepack.formats.executorch import parse_executor_runner
from edgepack.formats.onnx import parse_onnxruntime_perf_test
from edgepack.formats.tflite import parse_benchmark_model

DATA = Path(__file__).parent / "data" / "adb"


def fixture(name: str) -> str:
    text = (DATA / name).read_text()
    assert text.startswith("# RECONSTRUCTED FROM SOURCE, NOT RECORDED.")
    return text


def test_parse_benchmark_model_reads_the_timed_block_not_the_warmup():
    f = parse_benchmark_model(fixture("benchmark_model.txt"))
    assert f.tool == "benchmark_model" and f.threads == 4 and f.iterations == 50
    assert f.mean_ms == pytest.approx(6.1049)
    assert f.std_ms == pytest.approx(0.243)
    assert (f.min_ms, f.max_ms) == (pytest.approx(5.902), pytest.approx(7.314))
    assert f.p50_ms == pytest.approx(6.040) and f.p95_ms == pytest.approx(6.712)
    assert f.warmup_mean_ms == pytest.approx(6.8024)
    assert f.first_inference_ms == pytest.approx(9.841)
    assert f.init_ms == pytest.approx(41.207)
    assert f.peak_rss_mb == pytest.approx(14.6289)


def test_parse_benchmark_model_when_an_older_release_prints_no_percentiles_or_prefix():
    # Releases before the INFO: prefix and the p5/median/p95 fields; "no stats:" summary.
    text = """Initialized session in 0.896ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746

Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124

Average inference timings in us: Warmup: 2331.42, Init: 896, no stats: 2177.1
"""
    f = parse_benchmark_model(text)
    assert f.iterations == 459 and f.mean_ms == pytest.approx(2.1771)
    assert f.p50_ms is None and f.first_inference_ms == pytest.approx(12.231)
    assert f.init_ms == pytest.approx(0.896)


def test_parse_benchmark_model_rejects_output_without_timings():
    with pytest.raises(ToolchainError, match="no timing statistics"):
        parse_benchmark_model("ERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Failed to initialize the interpreter\n")


def test_parse_onnxruntime_perf_test_converts_seconds_to_ms():
    f = parse_onnxruntime_perf_test(fixture("onnxruntime_perf_test.txt"))
    assert f.tool == "onnxruntime_perf_test" and f.iterations == 100 and f.threads == 4
    assert f.mean_ms == pytest.approx(10.8312)
    assert f.p50_ms == pytest.approx(10.6917) and f.p90_ms == pytest.approx(11.4402) and f.p99_ms == pytest.approx(13.8215)
    assert f.min_ms == pytest.approx(10.2211) and f.max_ms == pytest.approx(13.9034)
    assert f.init_ms == pytest.approx(62.3417) and f.first_inference_ms == 14
    assert f.peak_rss_mb == pytest.approx(41189376 / 2**20)


def test_parse_onnxruntime_perf_test_without_s_gives_only_the_mean():
    text = "Session creation time cost: 0.05 s\nTotal inference requests: 10\nAverage inference time cost: 3.5 ms\n"
    f = parse_onnxruntime_perf_test(text)
    assert f.mean_ms == 3.5 and f.p50_ms is None and f.first_inference_ms is None


def test_parse_executor_runner_drops_warmup_iterations():
    f = parse_executor_runner(fixture("executor_runner.txt"), warmup=1)
    assert f.tool == "executor_runner" and f.threads == 4 and f.iterations == 7
    timed = [8.214, 8.011, 8.027, 7.996, 8.090, 8.002, 8.191]
    assert f.mean_ms == pytest.approx(sum(timed) / 7)
    assert f.first_inference_ms == pytest.approx(13.522) and f.warmup_mean_ms == pytest.approx(13.522)
    assert (f.min_ms, f.max_ms) == (7.996, 8.214)
    assert f.init_ms == pytest.approx(42.601)


def test_parse_executor_runner_when_a_release_prints_only_the_total():
    text = "I 00:00:00.041 executorch:executor_runner.cpp:231] Model executed successfully 10 time(s) in 81.5 ms.\n"
    f = parse_executor_runner(text, warmup=2)
    assert f.iterations == 10 and f.mean_ms == pytest.approx(8.15) and f.p50_ms is None


def test_parse_executor_runner_rejects_a_failed_run():
    text = "E 00:00:00.001 executorch:executor_runner.cpp:181] Failed to parse model file /data/local/tmp/m.pte\n"
    with pytest.raises(ToolchainError, match="no 'Model executed successfully'"):
        parse_executor_runner(text)


def test_adb_benchmark_says_parity_was_not_checked():
    f = parse_onnxruntime_perf_test(fixture("onnxruntime_perf_test.txt"))
    result = AdbBenchmark(serial="R5CT1234", format="onnx", figures=f, command="...", raw_output="")
    doc = result.latency_dict()
    assert result.outputs is None and doc["parity"] == NO_PARITY
    assert doc["timing"] == "wall time on device R5CT1234, measured by onnxruntime_perf_test"
    assert doc["p50"] == pytest.approx(10.6917)


@pytest.mark.parametrize("fmt,expected", [
    ("tflite", "--graph=/d/m --num_threads=4 --warmup_runs=2 --num_runs=20"),
    ("executorch", "--model_path=/d/m --num_executions=22 --cpu_threads=4"),
    ("onnx", "-m times -r 20 -x 4"),
])
def test_benchmark_command_passes_warmup_iterations_threads(fmt, expected):
    assert expected in " ".join(benchmark_command(fmt, "bin", "/d/m", warmup=2, iterations=20, threads=4))


def test_adb_runner_reports_a_missing_adb_binary(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(ToolchainError, match=r"^adb: '/nonexistent/adb' is not installed \(apt package adb"):
        AdbRunner("R5CT1234", adb="/nonexistent/adb").run(model, "tflite", warmup=1, iterations=1, threads=1)


@pytest.fixture
def adb_server():
    """A private adb server on a free port, so the test neither needs nor disturbs a
    user's server on 5037; stopped afterwards."""
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (apt package adb)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
    subprocess.run(["adb", "-P", str(port), "kill-server"], capture_output=True, timeout=30)


def test_adb_runner_names_the_missing_serial_and_the_connected_ones(adb_server, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    runner = AdbRunner("R5CT1234", server_port=adb_server, timeout_s=60)
    assert runner.devices() == {}
    assert runner.available() is False
    with pytest.raises(ToolchainError) as err:
        runner.run(model, "tflite", warmup=1, iterations=1, threads=1)
    assert str(err.value) == "adb: no device with serial 'R5CT1234'; connected: none"
    assert err.value.exit_code == 3
