"""`edgepack profile` on real artifacts: host and emulated aarch64."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, cli


@pytest.fixture
def built(tiny_project):
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 0, run.stderr
    return tiny_project.root / "dist" / "onnx-only"


PROFILE_KEYS = {"schema", "device", "runner", "source", "ok", "exit_code", "failures", "artifacts"}
PROFILE_ARTIFACT_KEYS = {"file", "format", "precision", "measurement", "estimates", "warnings"}


def test_profile_on_host_checks_parity_and_records_the_figures(built):
    run = cli("profile", built, "--json", "--iterations", "5")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert set(doc) == PROFILE_KEYS                                 # the JSON contract
    assert all(set(a) == PROFILE_ARTIFACT_KEYS for a in doc["artifacts"])
    assert doc["schema"] == "edgepack.profile/1" and doc["device"] == "raspberry-pi-4" and doc["runner"] == "host"
    (a,) = doc["artifacts"]
    m = a["measurement"]
    assert m["method"] == "measured" and m["p50_ms"] > 0 and m["p90_ms"] >= m["p50_ms"]
    assert m["parity"]["agreement"] == 1.0
    assert m["parity"]["max_abs_diff_vs_build_host"] == 0.0   # same runtime, same machine, same inputs
    assert any("no dotprod or i8mm" in w for w in a["warnings"])  # the Pi 4 has no SDOT
    manifest = json.loads((built / "manifest.json").read_text())
    rows = manifest["artifacts"][0]["measurements"]
    assert [(r["device"], r["runner"]) for r in rows] == [("raspberry-pi-4", "host")]
    again = cli("profile", built, "--json", "--iterations", "5")
    assert again.code == 0
    rows = json.loads((built / "manifest.json").read_text())["artifacts"][0]["measurements"]
    assert len(rows) == 1  # re-profiling replaces this device's row instead of piling up


def test_profile_fails_when_the_device_outputs_diverge_from_the_build(built):
    """Outputs beyond the manifest's tolerance from the build host's recorded ones are a
    different model on this device: exit 1, naming the artifact, the difference and the
    tolerance. Within the tolerance the same run passes."""
    manifest = json.loads((built / "manifest.json").read_text())
    entry = manifest["test_vectors"]["outputs"]["tiny.onnx"]
    recorded_file = built / entry["file"]
    recorded = np.load(recorded_file)
    np.save(recorded_file, recorded + np.float32(entry["atol"] / 2), allow_pickle=False)
    within = cli("profile", built, "--json", "--iterations", "2", "--no-record")
    assert within.code == 0, within.stderr
    np.save(recorded_file, recorded + np.float32(entry["atol"] * 4), allow_pickle=False)
    run = cli("profile", built, "--iterations", "2", "--no-record")
    assert run.code == 1, run.stdout + run.stderr
    assert "tiny.onnx" in run.stderr and "differ from the build host's" in run.stderr
    assert f"{entry['atol']:.4g}" in run.stderr
    doc = cli("profile", built, "--json", "--iterations", "2", "--no-record").json()
    assert doc["ok"] is False and doc["exit_code"] == 1 and len(doc["failures"]) == 1


@pytest.mark.slow
def test_profile_under_qemu_matches_the_host_exactly_and_counts_instructions(built):
    run = cli("profile", built, "--runner", "qemu", "--device", "raspberry-pi-5", "--json", "--iterations", "3")
    assert run.code == 0, run.stderr
    (a,) = run.json()["artifacts"]
    m = a["measurement"]
    assert m["method"] == "emulated" and m["p50_ms"] is None and m["cpu"] == "cortex-a76"
    assert m["parity"]["max_abs_diff_vs_build_host"] == 0.0  # int8: integer arithmetic, no rounding to differ
    assert m["instructions"]["per_inference"] > 0


def test_profile_unknown_device_lists_the_valid_ones(built):
    assert_one_line_error(cli("profile", built, "--device", "pixel-99"), 2, "unknown device profile 'pixel-99'", "pixel-7")


def test_profile_single_artifact_needs_inputs(built):
    assert_one_line_error(cli("profile", built / "tiny.onnx", "--device", "pixel-7"), 2, "--inputs")


def test_profile_path_that_does_not_exist(tmp_path):
    assert_one_line_error(cli("profile", tmp_path / "nothing"), 2, "no such file or folder")


def test_profile_artifact_the_runtime_rejects_exits_3(built, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00" * 64)
    run = cli("profile", bad, "--device", "pixel-7", "--inputs", built / "testdata" / "inputs.npy")
    assert_one_line_error(run, 3, "broken.onnx")


@pytest.mark.slow
def test_build_under_qemu_gates_latency_on_the_device_estimate(tiny_project):
    tiny_project.add_target("onnx-only", extra="max_latency_ms = 0.000001")
    run = cli("build", "-p", tiny_project.root, "--runner", "qemu", "--json")
    assert run.code == 1, run.stderr
    (target,) = run.json()["targets"]
    (failure,) = target["failures"]
    assert "tiny.onnx on raspberry-pi-4: estimated" in failure and "exceeds the latency budget of 1e-06 ms" in failure
    rows = target["manifest"]["artifacts"][0]["measurements"]
    emulated = next(r for r in rows if r["method"] == "emulated")
    estimate = next(r for r in rows if r["method"] == "estimated")
    assert emulated["cpu"] == "cortex-a72" and emulated["p50_ms"] is None       # emulation is never latency
    assert estimate["estimate"]["kind"] == "estimate" and estimate["estimate"]["counted_on"] == "cortex-a72"
    assert estimate["p50_ms"] == pytest.approx(estimate["estimate"]["estimate_ms"], abs=1e-3)  # both rounded
    # the rates were fitted on LiteRT counts: an ONNX Runtime estimate is unvalidated, and says so
    expected = estimate["estimate"]["expected_error"]
    assert expected["validated"] is False and "onnx runs other kernels" in expected["text"]
    assert expected["text"] in estimate["label"]
    tiny_project.add_target("onnx-only", extra="max_latency_ms = 1000")
    ok = cli("build", "-p", tiny_project.root, "--runner", "qemu", "--json")
    assert ok.code == 0, ok.stderr
    assert ok.json()["targets"][0]["manifest"]["gates"]["latency"].startswith("gated on estimates for raspberry-pi-4")


def test_host_only_build_says_latency_was_not_gated(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["gates"]["latency"].startswith("no latency budget") or "not gated" in manifest["gates"]["latency"]


def test_profile_ops_breaks_onnx_time_down_by_operator(built):
    run = cli("profile", built, "--json", "--ops", "--iterations", "10")
    assert run.code == 0, run.stderr
    ops = run.json()["artifacts"][0]["measurement"]["ops"]
    report = (built / "report.html").read_text()
    assert "Time per operator" in report and ops[0]["op"] in report   # recorded and drawn
    names = {r["op"] for r in ops}
    assert {"QLinearConv", "QGemm"} & names, names          # the int8 kernels ran and were timed
    assert sum(r["share"] for r in ops) == pytest.approx(1.0, abs=1e-6)
    assert all(r["ms_per_inference"] >= 0 and r["nodes"] >= 1 for r in ops)


def test_delegated_share_and_int8_warnings_name_their_evidence():
    from edgepack.config.loader import profiles_catalog
    from edgepack.devices.latency import delegated_share, int8_warnings

    details = {"delegated_nodes": 30, "non_delegated_ops": {"aten_view_copy_default": 1, "sym_size": 1}}
    assert delegated_share(details) == pytest.approx(30 / 32)
    assert delegated_share({"ops": {"CONV_2D": 2}}) is None          # a converter that does not report it
    pixel = profiles_catalog().load("pixel-7")                       # has dotprod
    assert int8_warnings(pixel, precision="fp32", export_details=details) == []
    (w,) = int8_warnings(pixel, precision="int8", export_details=details)
    assert "94% of the int8 ops are delegated" in w
    # a share just short of all never reads "100%" (EfficientNet-Lite0's .pte: 418 nodes delegated, its head's mean not)
    (w,) = int8_warnings(pixel, precision="int8", export_details={"delegated_nodes": 598, "non_delegated_ops": {"x": 2}})
    assert "only 99.6% of the int8 ops are delegated" in w
    missed = int8_warnings(pixel, precision="int8", instructions={"cpu": "cortex-a76", "dotprod_per_inference": 0,
                                                                  "mmla_per_inference": 0})
    assert any("executed no SDOT/UDOT" in m for m in missed)
    # counts from another CPU model say nothing about this device's kernels
    assert int8_warnings(pixel, precision="int8", instructions={"cpu": "cortex-a53", "dotprod_per_inference": 0,
                                                                "mmla_per_inference": 0}) == []
