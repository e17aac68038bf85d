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


def test_two_builds_package_to_identical_bytes_when_reproducible(tmp_path, monkeypatch):
    from edgepack.release.packaging import TIMINGS_OMITTED, package

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    one = package(built_output() / "android", archive=tmp_path / "one.tar.gz", reproducible=True)
    two = package(built_output("second") / "android", archive=tmp_path / "two.tar.gz", reproducible=True)
    assert one.sha256 == two.sha256
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    # what was left out is said, not silently dropped
    import io
    import tarfile

    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        name = next(n for n in tar.getnames() if n.endswith("/manifest.json"))
        manifest = json.load(io.TextIOWrapper(tar.extractfile(name)))
    lat = manifest["artifacts"][0]["latency_ms"]
    assert lat["omitted"] == TIMINGS_OMITTED and "p50" not in lat
    # and without the flag the two builds' measured latencies make the archives differ
    plain_one = package(built_output() / "android", archive=tmp_path / "p1.tar.gz")
    plain_two = package(built_output("second") / "android", archive=tmp_path / "p2.tar.gz")
    assert plain_one.sha256 != plain_two.sha256
