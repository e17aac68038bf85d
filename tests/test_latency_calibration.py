"""Latency calibration is an explicit input of a build: a named file (`--latency-calibration`
or `[build] latency_calibration`), checked before any work, applied per format, precision
and thread count, recorded by name and hash in the manifest; nothing read from a home folder."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import assert_one_line_error, cli
from edgepack.devices import estimate as est


def _calibration(path, profile="raspberry-pi-4", *, fmt="onnx", precision="int8", threads=1, factor=2.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    est.record_calibration(profile, artifact=f"tiny.{fmt}", fmt=fmt, precision=precision, threads=threads,
                           measured_ms=factor, estimated_ms=1.0, runner="ssh", path=path)
    return path


def test_build_refuses_a_calibration_file_that_is_not_there(tiny_project):
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--latency-calibration", tiny_project.root / "nope.json")
    assert_one_line_error(run, 2, "--latency-calibration", "nope.json not found")


def test_build_refuses_a_calibration_for_another_device_profile(tiny_project):
    path = _calibration(tiny_project.root / "pixel.json", profile="pixel-7")
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--calibration", path)
    assert_one_line_error(run, 2, "pixel.json calibrates device profile 'pixel-7'", "raspberry-pi-4")


def test_build_reads_the_calibration_named_in_edgepack_toml_and_the_flag_overrides_it(tiny_project, tmp_path):
    in_project = _calibration(tiny_project.root / "calibration" / "raspberry-pi-4.json")
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace("[build]\n", '[build]\nlatency_calibration = "calibration/raspberry-pi-4.json"\n'))
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["latency_calibration"] == str(in_project)
    flag = _calibration(tmp_path / "other.json")
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--json", "--calibration", flag)
    assert run.json()["latency_calibration"] == str(flag)


def test_build_refuses_a_calibration_measured_at_another_thread_count(tiny_project, tmp_path):
    four = _calibration(tmp_path / "pi.json", threads=4)
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--latency-calibration", four)
    assert_one_line_error(run, 2, "--latency-calibration: pi.json measured onnx int8 at 4 thread(s), but this build "
                                  "estimates it at 1 ([build] threads = 1, target onnx-only): profile with --threads 1, "
                                  "or build with threads = 4")
    # the same file applies once the build estimates at its thread count
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace("[build]\n", "[build]\nthreads = 4\n"))
    assert cli("build", "-p", tiny_project.root, "--dry-run", "--latency-calibration", four).code == 0


def test_build_refuses_a_calibration_that_matches_none_of_its_artifacts(tiny_project, tmp_path):
    tflite_only = _calibration(tmp_path / "pi.json", fmt="tflite", precision="fp32")
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--calibration", tflite_only)
    assert_one_line_error(run, 2, "pi.json holds tflite fp32 at 1 thread; none matches this build's estimates "
                                  "(onnx int8 at 1 thread)")


def test_build_without_calibration_plans_none(tiny_project):
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["latency_calibration"] is None


@pytest.mark.slow
def test_build_manifest_names_the_calibration_by_hash_or_null(tiny_project, tmp_path):
    path = _calibration(tmp_path / "pi.json")
    run = cli("build", "-p", tiny_project.root, "--calibration", path)
    assert run.code == 0, run.stderr + run.stdout
    manifest = json.loads((tiny_project.root / "dist" / "onnx-only" / "manifest.json").read_text())
    assert manifest["latency_calibration"] == {"file": "pi.json", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 0, run.stderr + run.stdout
    manifest = json.loads((tiny_project.root / "dist" / "onnx-only" / "manifest.json").read_text())
    assert manifest["latency_calibration"] is None


@pytest.mark.slow
def test_build_under_qemu_scales_estimates_by_the_given_calibration(tiny_project, tmp_path):
    path = _calibration(tmp_path / "pi.json")   # measured 2x the estimate
    run = cli("build", "-p", tiny_project.root, "--runner", "qemu", "--json", "--calibration", path)
    assert run.code == 0, run.stderr
    manifest = run.json()["targets"][0]["manifest"]
    estimate = next(r for r in manifest["artifacts"][0]["measurements"] if r["method"] == "estimated")["estimate"]
    assert estimate["calibration_factor"] == pytest.approx(2.0) and estimate["calibration_source"] == "pi.json"
    assert estimate["estimate_ms"] == pytest.approx(2.0 * max(estimate["compute_ms"], estimate["memory_ms"]), rel=1e-2, abs=2e-3)
    assert manifest["latency_calibration"]["file"] == "pi.json"


def test_profile_refuses_to_calibrate_more_threads_than_the_estimates_use_before_running(tmp_path):
    import numpy as np

    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"not run")   # refused before anything loads it
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    run = cli("profile", artifact, "--inputs", tmp_path / "x.npy", "--device", "raspberry-pi-4", "--runner", "adb",
              "--threads", "8", "--latency-calibration", tmp_path / "pi.json")
    assert_one_line_error(run, 2, "--threads 8: raspberry-pi-4's latency estimates use at most its cortex-a72 cluster's "
                                  "4 cores", "valid: --threads 1 to 4")
    assert not (tmp_path / "pi.json").exists()
