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
        assert a.pop("timings_s")["export"] > 0      # both builds exported afresh (--fresh)
    assert manifest.pop("timings_s")["load"] > 0
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


CONV_DIGEST = """
import hashlib, sys
import torch
if sys.argv[1] == "pin":
    from edgepack.determinism import pin_float_kernels
    pin_float_kernels()
g = torch.Generator().manual_seed(0)
x, w = torch.randn(8, 32, 28, 28, generator=g), torch.randn(64, 32, 3, 3, generator=g)
print(hashlib.sha256(torch.nn.functional.conv2d(x, w).numpy().tobytes()).hexdigest())
"""


def _conv_digest(mode: str, **env) -> str:
    import os
    import subprocess
    import sys

    from release_helpers import REPO

    full = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    full.update(PYTHONPATH=str(REPO), **env)
    proc = subprocess.run([sys.executable, "-c", CONV_DIGEST, mode], capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA cap is x86-64's")
def test_pinned_float_kernels_compute_what_an_avx2_only_host_computes():
    """A build pins oneDNN to AVX2 after torch is imported and before its first
    convolution; the sums are then the ones an AVX2-only machine makes, bit for bit,
    whatever vector units this machine has."""
    assert _conv_digest("pin") == _conv_digest("plain", ONEDNN_MAX_CPU_ISA="AVX2")
    # and the cap is what decides: kernels of another width sum in another order
    assert _conv_digest("plain", ONEDNN_MAX_CPU_ISA="SSE41") != _conv_digest("plain", ONEDNN_MAX_CPU_ISA="AVX2")


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA cap is x86-64's")
def test_manifest_says_how_float_kernels_were_chosen_and_diff_tells_tolerable_byte_changes(tmp_path):
    from release_helpers import SAMPLE, cli

    pinned = built_output() / "android"
    manifest = json.loads((pinned / "manifest.json").read_text())
    assert manifest["toolchain"]["float_kernels"] == "x86_64, oneDNN ISA capped at AVX2"
    assert all("AVX2" in a["reproducible_across"] for a in manifest["artifacts"])

    # Another build machine's float kernels, played here by oneDNN's SSE4.1 ones: the
    # calibrated int8 bytes move, and diff says the outputs stayed within tolerance.
    out = tmp_path / "sse41"
    proc = cli("build", "-p", SAMPLE, "-t", "android", "-o", out, "--no-latency-gate", env={"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # host latency is compared too, and is noise here: only the bytes and outputs are the point
    proc = cli("diff", pinned, out / "android", "--json", "--max-latency-increase-pct", "1e9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changes = json.loads(proc.stdout)["changes"]
    moved = {c["item"] for c in changes if c["field"] == "sha256"}
    assert moved, "SSE4.1 float kernels gave the same int8 bytes as AVX2 ones"
    verdicts = {c["item"]: c["note"] for c in changes if c["field"] == "outputs_max_abs_diff"}
    assert set(verdicts) == moved
    assert all(note.startswith("bytes differ, outputs within tolerance") for note in verdicts.values()), verdicts
    assert any(c["item"] == "float_kernels" and c["new"].endswith("SSE41") for c in changes)
    # the same verdicts from the two releases packaged, read inside the archives
    for name, output in (("one", pinned.parent), ("two", out)):
        proc = cli("package", "-p", SAMPLE, "-t", "android", "-o", output, "--archive", tmp_path / f"{name}.tar.gz")
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("diff", tmp_path / "one.tar.gz", tmp_path / "two.tar.gz", "--json", "--max-latency-increase-pct", "1e9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archived = {c["item"]: c["note"] for c in json.loads(proc.stdout)["changes"] if c["field"] == "outputs_max_abs_diff"}
    assert archived == verdicts
