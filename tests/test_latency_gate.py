"""A target's max_latency_ms is judged on device estimates, or the build fails saying how
to judge or waive it; a waiver (--no-latency-gate) is recorded in the manifest."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import cli
from edgepack.config.loader import profiles_catalog
from edgepack.config.schema import Budgets
from edgepack.devices.latency import estimate_row
from edgepack.pipeline.gate import gate
from edgepack.pipeline.records import ArtifactRecord, ExportKey, Verified
from edgepack.release.manifest_model import MEASUREMENT
from edgepack.verify.metrics import compare

PI = profiles_catalog().load("raspberry-pi-4")


def _record(file: str, estimate_ms: float | None) -> ArtifactRecord:
    """An artifact whose outputs match the reference exactly, with an estimate of about
    `estimate_ms` on the Raspberry Pi 4 (or none, as on a host build)."""
    labels = np.arange(20) % 4
    reference = np.eye(4, dtype=np.float32)[labels] * 5
    rows = ()
    if estimate_ms is not None:
        per_ms = estimate_row(PI, instructions={"cpu": PI.qemu_cpu, "per_inference": 1e6}, artifact_bytes=0,
                              precision="fp32", activation_elements=0, threads=1, fmt="tflite")["p50_ms"]
        row = estimate_row(PI, instructions={"cpu": PI.qemu_cpu, "per_inference": 1e6 * estimate_ms / per_ms},
                           artifact_bytes=0, precision="fp32", activation_elements=0, threads=1, fmt="tflite")
        rows = (MEASUREMENT.validate_python(row),)
    return ArtifactRecord(file=file, key=ExportKey("tflite", "fp32"), artifact=SimpleNamespace(size_bytes=10),
                          verified=Verified(parity=compare(reference, reference, labels), latency_ms={}, recorded=reference[:2]),
                          fp32_reference_bytes=40, measurements=rows)


def _target(max_latency_ms):
    return SimpleNamespace(target=SimpleNamespace(budgets=Budgets(max_latency_ms=max_latency_ms)), device=PI)


def test_gate_fails_a_latency_budget_it_cannot_judge_with_one_line_naming_both_remedies():
    verdict = gate(_target(50.0), [_record("m.tflite", None), _record("m2.tflite", None)], runner="host")
    assert not verdict.passed and verdict.latency_gate == "unjudged"
    (line,) = verdict.failures   # one line for the budget, not one per artifact
    assert line == ("max_latency_ms = 50 cannot be judged in this build (the host runner measures this machine, not "
                    "raspberry-pi-4; m.tflite, m2.tflite): build with --runner qemu to estimate raspberry-pi-4 latency, "
                    "or pass --no-latency-gate to waive the latency budget (recorded in the manifest)")
    assert verdict.latency_note == "not judged: no raspberry-pi-4 estimate in this build (host runner); the budget fails, see below"
    checks = [c for r in verdict.checks.values() for c in r if c.budget == "max_latency_ms"]
    assert [(c.value, c.limit, c.passed) for c in checks] == [(None, 50.0, False)] * 2


def test_gate_waived_by_no_latency_gate_passes_and_says_so():
    verdict = gate(_target(50.0), [_record("m.tflite", None)], runner="host", latency_gate=False)
    assert verdict.passed and verdict.latency_gate == "waived"
    assert verdict.latency_note.startswith("not gated: max_latency_ms = 50 waived by --no-latency-gate")
    assert not any(c.budget == "max_latency_ms" for r in verdict.checks.values() for c in r)


def test_gate_holds_the_budget_against_the_estimate():
    over = gate(_target(10.0), [_record("slow.tflite", 20.0), _record("fast.tflite", 5.0)], runner="qemu")
    assert over.latency_gate == "gated" and over.latency_note.startswith("gated on estimates for raspberry-pi-4")
    (line,) = over.failures
    assert line.startswith("slow.tflite on raspberry-pi-4: estimated 20.00 ms") and "budget of 10 ms" in line
    assert gate(_target(30.0), [_record("slow.tflite", 20.0)], runner="qemu").passed
    # an estimate missing for one artifact fails the budget for that artifact
    part = gate(_target(30.0), [_record("slow.tflite", 20.0), _record("odd.tflite", None)], runner="qemu")
    assert not part.passed and part.latency_gate == "unjudged" and "(no estimate for raspberry-pi-4 was made; odd.tflite)" in part.failures[0]


def test_gate_without_a_latency_budget_passes_on_host():
    verdict = gate(_target(None), [_record("m.tflite", None)], runner="host")
    assert verdict.passed and verdict.latency_gate == "no_budget" and verdict.latency_note == "no latency budget"


def test_dry_run_plan_says_the_latency_budget_is_waived(tiny_project):
    tiny_project.add_target("onnx-only", extra="max_latency_ms = 1000")
    run = cli("build", "-p", tiny_project.root, "--dry-run", "--json", "--no-latency-gate")
    assert run.code == 0, run.stderr
    assert run.json()["latency_gate"] is False
    assert cli("build", "-p", tiny_project.root, "--dry-run", "--json").json()["latency_gate"] is True


@pytest.mark.slow
def test_host_build_with_a_latency_budget_fails_and_no_latency_gate_waives_it_in_the_manifest(tiny_project):
    tiny_project.add_target("onnx-only", extra="max_latency_ms = 1000")
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 1, run.stderr
    assert "max_latency_ms = 1000 cannot be judged in this build" in run.stdout
    assert "--runner qemu" in run.stdout and "--no-latency-gate" in run.stdout
    # said before any work too, so nobody waits for the build to learn it
    assert ("warning: onnx-only: max_latency_ms = 1000 cannot be judged by a host build and will fail it; "
            "--runner qemu judges it, --no-latency-gate waives it") in " ".join(run.stderr.split())
    rejected = json.loads((tiny_project.root / "dist" / "onnx-only.rejected" / "manifest.json").read_text())
    assert rejected["gates"]["latency_gate"] == "unjudged" and not rejected["gates"]["passed"]
    assert not (tiny_project.root / "dist" / "onnx-only").exists()

    waived = cli("build", "-p", tiny_project.root, "--no-latency-gate", "--json")
    assert waived.code == 0, waived.stderr
    gates = json.loads((tiny_project.root / "dist" / "onnx-only" / "manifest.json").read_text())["gates"]
    assert gates["passed"] and gates["latency_gate"] == "waived"
    assert gates["latency"].startswith("not gated: max_latency_ms = 1000 waived by --no-latency-gate")
