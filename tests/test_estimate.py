"""Latency estimates: arithmetic on known inputs, calibration, int8 warnings, profile facts."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from edgepack.config.loader import profiles_catalog
from edgepack.config.schema import DeviceProfile
from edgepack.devices import estimate as est
from edgepack.errors import ConfigError


def make_profile(**changes) -> DeviceProfile:
    base = {
        "name": "test-board", "kind": "board", "isa": "armv8-a", "features": ["neon"],
        "memory_gb": 1, "memory_bandwidth_gbs": 4.0, "qemu_cpu": "cortex-a72",
        "clusters": [
            {"core": "little", "count": 4, "max_clock_ghz": 1.0, "nn_ipc": 0.5, "nn_ipc_basis": "test"},
            {"core": "big", "count": 2, "max_clock_ghz": 2.0, "nn_ipc": 1.0, "nn_ipc_basis": "test fp32",
             "nn_ipc_int8": 2.0, "nn_ipc_int8_basis": "test int8"},
        ],
    }
    base.update(changes)
    return DeviceProfile.model_validate(base)


def test_estimate_latency_is_instructions_over_ipc_times_clock_on_the_fastest_cluster():
    e = est.estimate_latency(make_profile(), instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0)
    # 100e6 / (1.0 * 2.0e9) s = 50 ms, on the big cluster (1.0 * 2.0 > 0.5 * 1.0)
    assert e.core == "big" and e.estimate_ms == pytest.approx(50.0)
    assert e.bound == "compute" and e.kind == "estimate" and "estimate" in e.method
    assert e.as_dict()["instructions_per_inference"] == 100e6


def test_estimate_latency_is_memory_bound_when_bytes_dominate():
    e = est.estimate_latency(make_profile(), instructions_per_inference=1e6, counted_on="cortex-a72", bytes_moved=400_000_000)
    assert e.compute_ms == pytest.approx(0.5)
    assert e.memory_ms == pytest.approx(100.0)      # 0.4 GB / 4 GB/s
    assert e.bound == "memory" and e.estimate_ms == pytest.approx(100.0)


def test_estimate_latency_uses_int8_ipc_for_int8_and_notes_its_absence():
    p = make_profile()
    assert est.estimate_latency(p, instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0,
                                precision="int8").estimate_ms == pytest.approx(25.0)
    no_int8 = make_profile(clusters=[{"core": "big", "count": 1, "max_clock_ghz": 2.0, "nn_ipc": 1.0, "nn_ipc_basis": "x"}])
    e = est.estimate_latency(no_int8, instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0, precision="int8")
    assert e.estimate_ms == pytest.approx(50.0) and any("no published int8" in n for n in e.notes)


def test_estimate_latency_scales_threads_with_parallel_efficiency_capped_at_cluster_size():
    e = est.estimate_latency(make_profile(), instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0, threads=4)
    assert e.threads == 2
    assert e.estimate_ms == pytest.approx(50.0 / (2 * est.PARALLEL_EFFICIENCY))
    assert any("cluster has 2 cores" in n for n in e.notes)


def test_estimate_latency_rejects_counts_from_another_cpu_model():
    with pytest.raises(ValueError, match="cortex-a53"):
        est.estimate_latency(make_profile(), instructions_per_inference=1e6, counted_on="cortex-a53", bytes_moved=0)


def test_estimate_latency_needs_a_rated_cluster():
    p = make_profile(clusters=[{"core": "x", "count": 1, "max_clock_ghz": 1.0}])
    with pytest.raises(ConfigError, match="nn_ipc"):
        est.estimate_latency(p, instructions_per_inference=1e6, counted_on="cortex-a72", bytes_moved=0)


def test_profile_nn_ipc_without_basis_is_rejected():
    with pytest.raises(ValueError, match="nn_ipc_basis"):
        make_profile(clusters=[{"core": "x", "count": 1, "max_clock_ghz": 1.0, "nn_ipc": 1.0}])


def test_shipped_profiles_rate_their_fastest_cluster_with_a_cited_basis():
    catalog = profiles_catalog()
    for name in ("pixel-7", "raspberry-pi-4", "raspberry-pi-5", "cortex-a53-iot", "graviton2"):
        p = catalog.load(name)
        c = est.fastest_cluster(p)
        assert c.nn_ipc and "XNNPACK README" in c.nn_ipc_basis, name
        assert any("XNNPACK" in s for s in p.sources), name


def test_bytes_moved_counts_weights_once_and_activations_twice():
    assert est.bytes_moved(weight_bytes=1000, activation_elements=10, activation_bytes_per_element=4) == 1080
    assert est.activation_bytes_per_element("int8") == 1
    assert est.activation_bytes_per_element("fp16") == 4


def _record(path, artifact, measured_ms, estimated_ms, *, runner="ssh", fmt="tflite", precision="fp32", threads=1,
            profile="test-board"):
    return est.record_calibration(profile, artifact=artifact, fmt=fmt, precision=precision, threads=threads,
                                  measured_ms=measured_ms, estimated_ms=estimated_ms, runner=runner, path=path)


def test_calibration_factor_is_geometric_mean_and_is_applied(tmp_path):
    path = tmp_path / "test-board.json"
    _record(path, "a.tflite", 20.0, 10.0)
    cal = _record(path, "b.tflite", 5.0, 10.0)
    assert cal.factor_for("tflite", "fp32", 1) == pytest.approx(1.0)            # 2x and 0.5x cancel
    cal = _record(path, "b.tflite", 20.0, 10.0, runner="adb")
    assert len(cal.measurements) == 2 and cal.factor_for("tflite", "fp32", 1) == pytest.approx(2.0)   # b replaced
    loaded = est.load_calibration("test-board", path=path)
    assert loaded.factor_for("tflite", "fp32", 1) == pytest.approx(2.0)
    assert json.loads(path.read_text())["factors"] == [{"format": "tflite", "precision": "fp32", "threads": 1, "factor": 2.0}]
    e = est.estimate_latency(make_profile(), instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0,
                             calibration=loaded)
    assert e.estimate_ms == pytest.approx(100.0) and e.calibration_factor == pytest.approx(2.0)
    assert e.calibration_source == path.name


def test_calibration_applies_only_to_its_format_precision_and_threads(tmp_path):
    path = tmp_path / "board.json"
    _record(path, "m.tflite", 20.0, 10.0, fmt="tflite", precision="int8", threads=1)     # 2x
    _record(path, "m.onnx", 30.0, 10.0, fmt="onnx", precision="int8", threads=1)         # 3x
    _record(path, "m.tflite", 40.0, 10.0, fmt="tflite", precision="int8", threads=2)     # 4x: another key, kept apart
    cal = est.load_calibration("test-board", path=path)
    assert len(cal.measurements) == 3
    board = make_profile()

    def estimate(fmt, precision, threads):
        return est.estimate_latency(board, instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0,
                                    precision=precision, threads=threads, fmt=fmt, calibration=cal)

    uncalibrated = est.estimate_latency(board, instructions_per_inference=100e6, counted_on="cortex-a72", bytes_moved=0,
                                        precision="int8", fmt="tflite").estimate_ms
    assert estimate("tflite", "int8", 1).estimate_ms == pytest.approx(2 * uncalibrated)
    assert estimate("onnx", "int8", 1).calibration_factor == pytest.approx(3.0)
    assert estimate("tflite", "int8", 2).calibration_factor == pytest.approx(4.0)
    # no measurement of the key: not applied, and the estimate says what the file holds
    fp32 = estimate("tflite", "fp32", 1)
    assert fp32.calibration_factor == 1.0 and fp32.calibration_source == "none (board.json has no tflite fp32 at 1 thread measurement)"
    assert any("not applied" in n and "tflite int8 at 2 threads" in n for n in fp32.notes)
    assert estimate("executorch", "int8", 1).calibration_factor == 1.0


def test_calibration_file_is_written_through_a_unique_temporary_file(tmp_path):
    path = tmp_path / "board.json"
    fixed = tmp_path / "board.json.tmp"
    fixed.mkdir()                        # the fixed name earlier versions wrote through is taken
    _record(path, "a.tflite", 20.0, 10.0)
    assert est.load_calibration("test-board", path=path).factor_for("tflite", "fp32", 1) == pytest.approx(2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.json", "board.json.tmp"]   # nothing left behind


def test_calibration_of_the_first_schema_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema": "edgepack.calibration/1", "profile": "test-board", "factor": 2.0,
                                "measurements": [{"artifact": "a.tflite", "measured_ms": 2.0, "estimated_ms": 1.0,
                                                  "runner": "ssh", "recorded": "2026-01-01T00:00:00Z"}]}))
    with pytest.raises(ConfigError, match="one factor for every format, precision and thread count"):
        est.load_calibration("test-board", path=path)


def test_estimate_row_reads_no_calibration_unless_given(tmp_path, monkeypatch):
    from edgepack.devices.latency import calibration_record, estimate_row

    board = make_profile()
    # A file where earlier versions looked implicitly: it must not change anything.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hidden = tmp_path / "cache" / "edgepack" / "calibration" / "test-board.json"
    hidden.parent.mkdir(parents=True)
    _record(hidden, "a.tflite", 30.0, 10.0)
    counted = {"cpu": "cortex-a72", "per_inference": 100e6}
    row = estimate_row(board, instructions=counted, artifact_bytes=0, precision="fp32", activation_elements=0, threads=1)
    assert row["p50_ms"] == pytest.approx(50.0) and row["estimate"]["calibration_factor"] == 1.0
    assert calibration_record(None, board) is None

    given = tmp_path / "board.json"
    _record(given, "a.tflite", 20.0, 10.0)
    row = estimate_row(board, instructions=counted, artifact_bytes=0, precision="fp32", activation_elements=0, threads=1,
                       calibration=given)
    assert row["p50_ms"] == pytest.approx(100.0) and row["estimate"]["calibration_source"] == "board.json"
    assert calibration_record(given, board) == {"file": "board.json",
                                                "sha256": hashlib.sha256(given.read_bytes()).hexdigest()}
    # another profile's file is not applied to this device, and the estimate says so
    other = make_profile(name="other-board")
    row = estimate_row(other, instructions=counted, artifact_bytes=0, precision="fp32", activation_elements=0, threads=1,
                       calibration=given)
    assert row["p50_ms"] == pytest.approx(50.0) and any("not applied" in n for n in row["estimate"]["notes"])
    assert calibration_record(given, other) is None


def test_load_calibration_refuses_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        est.load_calibration("test-board", path=tmp_path / "none.json")


def test_calibrate_from_divides_by_the_estimate_at_the_measured_thread_count(tmp_path):
    from edgepack.devices.latency import calibrate_from, estimate_row

    board = make_profile()
    counted = {"cpu": "cortex-a72", "per_inference": 100e6}
    built = estimate_row(board, instructions=counted, artifact_bytes=0, precision="fp32", activation_elements=0, threads=1)
    assert built["estimate"]["estimate_ms"] == pytest.approx(50.0)   # the build estimated 1 thread
    path = tmp_path / "board.json"
    # measured on 2 threads: the estimate for 2 threads is 50 / (2 * 0.74)
    assert calibrate_from(board, file="a.tflite", fmt="tflite", precision="fp32", measured_ms=40.0, previous_rows=[built],
                          runner="ssh", threads=2, measured_threads=2, calibration=path) == "board.json"
    m = est.load_calibration("test-board", path=path).measurements[0]
    assert (m.format, m.precision, m.threads) == ("tflite", "fp32", 2)
    assert m.estimated_ms == pytest.approx(50.0 / (2 * est.PARALLEL_EFFICIENCY))
    # without a named file nothing is written anywhere
    assert calibrate_from(board, file="b.tflite", fmt="tflite", precision="fp32", measured_ms=40.0, previous_rows=[built],
                          runner="ssh", threads=1, calibration=None) is None
    assert len(est.load_calibration("test-board", path=path).measurements) == 1


def test_calibrate_from_refuses_a_run_at_another_thread_count_than_asked(tmp_path):
    from edgepack.devices.latency import calibrate_from, estimate_row

    board = make_profile()
    built = estimate_row(board, instructions={"cpu": "cortex-a72", "per_inference": 100e6}, artifact_bytes=0,
                         precision="int8", activation_elements=0, threads=1)
    path = tmp_path / "board.json"
    with pytest.raises(ConfigError) as e:
        calibrate_from(board, file="a.tflite", fmt="tflite", precision="int8", measured_ms=40.0, previous_rows=[built],
                       runner="ssh", threads=2, measured_threads=1, calibration=path)
    assert str(e.value) == ("a.tflite: the ssh run reports 1 threads, not the --threads 2 asked; not recorded in "
                            "board.json, whose factors are kept per thread count")
    # more threads than the fastest cluster's cores: the estimate would be for 2, the p50 for 4
    with pytest.raises(ConfigError, match=r"--threads 4: test-board's latency estimates use at most its big cluster's 2 cores"):
        calibrate_from(board, file="a.tflite", fmt="tflite", precision="int8", measured_ms=40.0, previous_rows=[built],
                       runner="ssh", threads=4, measured_threads=4, calibration=path)
    assert not path.exists()


def test_load_calibration_rejects_another_profiles_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema": est.CALIBRATION_SCHEMA, "profile": "pixel-7", "measurements": []}))
    with pytest.raises(ConfigError, match="pixel-7"):
        est.load_calibration("raspberry-pi-4", path=path)
    path.write_text(json.dumps({"schema": "other/1", "profile": "pixel-7", "measurements": []}))
    with pytest.raises(ConfigError, match="schema"):
        est.load_calibration("pixel-7", path=path)


def test_int8_warnings_name_missing_dotprod():
    w = est.int8_slower_warnings(make_profile(features=["neon"]))
    assert len(w) == 1 and "no dotprod or i8mm" in w[0]


def test_int8_warnings_when_dotprod_exists_but_kernels_do_not_use_it():
    p = make_profile(features=["neon", "dotprod"])
    assert est.int8_slower_warnings(p, int8_dotprod=1000, int8_mmla=0) == []
    w = est.int8_slower_warnings(p, int8_dotprod=0, int8_mmla=0)
    assert len(w) == 1 and "SDOT" in w[0]


def test_int8_warnings_when_int8_executes_more_instructions_or_falls_out_of_the_delegate():
    p = make_profile(features=["neon", "dotprod", "i8mm"])
    assert est.int8_slower_warnings(p, fp32_instructions=100.0, int8_instructions=40.0) == []
    w = est.int8_slower_warnings(p, fp32_instructions=100.0, int8_instructions=120.0, delegated_share=0.5)
    assert len(w) == 2 and any("1.20x" in x for x in w) and any("50%" in x for x in w)


def test_parallel_efficiency_is_one_for_one_thread():
    assert est.parallel_efficiency(1) == 1.0 and math.isclose(est.parallel_efficiency(4), est.PARALLEL_EFFICIENCY)
