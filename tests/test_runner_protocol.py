"""Every runner keeps the one Runner protocol: the same `run` signature and a RunResult."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from edgepack.config.loader import profiles_catalog
from edgepack.devices.adb import AdbBenchmark, AdbRunner
from edgepack.devices.base import RunResult, Runner
from edgepack.devices.host import HostRunner
from edgepack.devices.qemu import QemuRunner
from edgepack.devices.selection import RUNNERS, ReachOverrides, make_runner
from edgepack.devices.ssh import SshRunner
from edgepack.errors import ConfigError, ToolchainError
from edgepack.formats.base import BenchmarkFigures


def _profile(name: str = "raspberry-pi-4"):
    from pathlib import Path

    return profiles_catalog(Path(".").resolve()).load(name)


@pytest.mark.parametrize("cls", [HostRunner, QemuRunner, SshRunner, AdbRunner])
def test_runner_run_has_the_protocol_signature(cls):
    def params(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]

    wanted = params(Runner.run)
    got = params(cls.run)
    # adb's `inputs` defaults to None (its tools feed their own); everything else is equal.
    if cls is AdbRunner:
        got = [(n, k, inspect.Parameter.empty) if n == "inputs" else (n, k, d) for n, k, d in got]
    assert got == wanted
    assert inspect.signature(cls.run).return_annotation in ("RunResult", RunResult)


def test_make_runner_builds_each_runner_by_name():
    device = _profile()
    assert [type(make_runner(n, device, ReachOverrides(ssh_host="pi.local", adb_serial="R5CT"))).__name__ for n in RUNNERS] == \
        ["HostRunner", "QemuRunner", "SshRunner", "AdbRunner"]
    with pytest.raises(ConfigError, match="--runner 'usb': valid runners: host, qemu, ssh, adb"):
        make_runner("usb", device)


def test_adb_benchmark_maps_onto_a_run_result_without_outputs():
    figures = BenchmarkFigures(tool="benchmark_model", iterations=50, mean_ms=6.1049, init_ms=41.207, std_ms=0.243,
                               min_ms=5.902, max_ms=7.314, p50_ms=6.04, threads=4)
    bench = AdbBenchmark(serial="R5CT1234", format="tflite", figures=figures, command="...", raw_output="")
    run = bench.run_result()
    assert isinstance(run, RunResult) and run.outputs is None and run.runner == "adb"
    assert (run.p50_ms, run.p90_ms, run.import_ms, run.load_ms, run.threads) == (6.04, None, None, 41.207, 4)
    doc = run.latency_dict()
    assert doc == bench.latency_dict()
    assert doc["timing"] == "wall time on device R5CT1234, measured by benchmark_model"
    assert (doc["min"], doc["max"], doc["p90"]) == (5.902, 7.314, None)


def test_adb_runner_refuses_a_batch_its_tool_cannot_run(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(ToolchainError, match="benchmark_model feeds the model its own inputs .* a batch of 4 cannot be run over adb"):
        AdbRunner("R5CT1234", adb="/nonexistent/adb").run(model, "tflite", None, warmup=1, iterations=1, threads=1, batch=4)


def test_qemu_runner_refuses_a_batch_the_native_runner_cannot_run(tmp_path):
    model = tmp_path / "m.pte"
    model.write_bytes(b"x")
    with pytest.raises(ToolchainError, match="executorch: the native et_runner runs one sample per call; a batch of 4"):
        QemuRunner(_profile()).run(model, "executorch", np.zeros((4, 3), np.float32), warmup=0, iterations=1, threads=1, batch=4)


def test_runner_script_folder_shadows_no_standard_library_module():
    # The runner script runs from its own folder, first on sys.path: a sibling named like
    # a standard module (select, queue, ...) would replace it for every runtime it imports.
    import sys
    from pathlib import Path

    from edgepack.devices.base import RUNNER_SCRIPT

    siblings = {p.stem for p in Path(RUNNER_SCRIPT).parent.glob("*.py")}
    assert siblings & set(sys.stdlib_module_names) == set()
