"""Two builds of the same project give byte-identical artifacts and test vectors; only
the measured fields of the manifest (latency, peak memory) and what is drawn from them
(report.html) may differ."""

from __future__ import annotations

import hashlib
import json

import pytest

from release_helpers import built_output

pytestmark = pytest.mark.slow

MEASURED = {"import_ms", "load_ms", "first_inference_ms", "p50", "p90", "p99", "mean", "std", "peak_rss_mb"}


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_measurements(manifest: dict) -> dict:
    for a in manifest["artifacts"]:
        a["latency_ms"] = {k: v for k, v in a["latency_ms"].items() if k not in MEASURED}
    return manifest


def test_building_twice_gives_identical_artifacts_and_test_vectors():
    one, two = built_output() / "android", built_output("second") / "android"
    d1, d2 = _digest(one), _digest(two)
    assert set(d1) == set(d2)
    same = {k for k in d1 if k not in ("manifest.json", "report.html")}
    assert {k: d1[k] for k in same} == {k: d2[k] for k in same}
    assert {"digits.tflite", "digits.pte", "digits.onnx", "testdata/inputs.npy"} <= same
    m1 = _without_measurements(json.loads((one / "manifest.json").read_text()))
    m2 = _without_measurements(json.loads((two / "manifest.json").read_text()))
    assert m1 == m2
