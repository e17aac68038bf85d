"""report.html: self-contained, drawn for any number of artifacts and stages, and
rendered by a real browser without errors."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgepack.release.report import render, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _estimate(ms: float) -> dict:
    """An estimated-latency row as a qemu build writes it."""
    est = {"device": "pixel-7", "estimate_ms": ms, "compute_ms": ms, "memory_ms": 0.001, "bound": "compute",
           "core": "cortex-x1", "clock_ghz": 2.85, "nn_ipc": 1.1, "precision": "int8", "threads": 1,
           "instructions_per_inference": ms * 3.1e6, "counted_on": "cortex-a76", "bytes_moved": 120000,
           "memory_bandwidth_gbs": 51.2, "calibration_factor": 1.0, "calibration_source": "none (no device measured)",
           "ipc_basis": "a cited figure", "kind": "estimate", "method": "estimate: instructions / rate", "notes": []}
    return {"device": "pixel-7", "method": "estimated", "runner": "estimate", "threads": 1, "p50_ms": ms,
            "p90_ms": None, "label": f"~{ms:.1f} ms (estimate, 1 thread, cortex-x1)", "estimate": est}


def _artifact(i: int, fmt: str) -> dict:
    return {
        "format": fmt, "precision": "int8", "file": f"m{i}.{fmt}", "sha256": f"{i:064x}", "size_bytes": 1000 * (i + 1),
        "size_vs_fp32_weights": 0.25, "accuracy": 0.9 + i / 100, "reference_accuracy": 0.95, "accuracy_drop_pt": 5 - i,
        "agreement": 0.97, "max_abs_error": 0.1, "snr_db": 30.0, "evaluated_samples": 100,
        "latency_ms": {"runner": "host", "machine": "x86_64", "runtime": "rt 1", "threads": 1, "iterations": 5,
                       "p50": 0.1 * (i + 1), "p90": 0.12 * (i + 1), "p99": 0.2, "mean": 0.1, "std": 0.01},
        "measurements": [_estimate(0.5 * (i + 1))],
        "export": {"ops": {"CONV_2D": i + 1, "RESHAPE": 1}},
        "signature": {"inputs": [{"name": "x", "shape": ["batch", 3], "dtype": "float32", "quantization": None}],
                      "outputs": [{"name": "y", "shape": [1, 2], "dtype": "int8", "quantization": {"scale": 0.1, "zero_point": -3}}]},
    }


def _manifest(n_artifacts: int, n_stages: int) -> dict:
    fmts = ["tflite", "executorch", "onnx"]
    return {
        "schema": "edgepack.manifest/1", "project": {"name": "toy", "version": "2.0.0", "description": "<b>escaped</b>"},
        "target": "android", "device_profile": "pixel-7",
        "source": {"sha256": "0" * 64, "file": "w.safetensors", "parameters": 10, "fp32_weight_bytes": 4000,
                   "input_shape": [1, 3], "input_name": "x", "output_name": "y"},
        "evaluation": {"split": "evaluation", "samples": 100, "reference_accuracy": 0.95},
        "calibration": {"samples": 10}, "toolchain": {"edgepack": "0.1.0"},
        "budgets": {"max_accuracy_drop_pt": 1.0, "max_size_bytes": None, "max_latency_ms": None},
        "gates": {"passed": n_artifacts < 3, "failures": [] if n_artifacts < 3 else ["m0.tflite: drop 5 pt"]},
        "stages": [{"name": f"s{i}", "kind": "pass", "size_bytes": 4000 - 500 * i, "accuracy": 0.95 - i / 100,
                    "parameters": 10} for i in range(n_stages)],
        "artifacts": [_artifact(i, fmts[i % 3]) for i in range(n_artifacts)],
    }


@pytest.mark.parametrize("n_artifacts,n_stages", [(0, 0), (1, 0), (1, 1), (3, 4), (7, 2)])
def test_report_is_self_contained_for_any_number_of_artifacts_and_stages(n_artifacts, n_stages):
    page = render(_manifest(n_artifacts, n_stages))
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "the page references something outside itself"
    assert "http://" not in page and "https://" not in page
    assert "<b>escaped</b>" not in page and "&lt;b&gt;escaped&lt;/b&gt;" in page
    images = re.findall(r'src="data:image/png;base64,', page)
    assert (len(images) > 0) == (n_artifacts > 0 or n_stages > 0)
    for i in range(n_artifacts):
        assert f"m{i}." in page


def test_report_is_the_same_bytes_for_the_same_manifest(tmp_path):
    m = _manifest(3, 2)
    a = write_report(m, tmp_path).read_bytes()
    b = render(copy.deepcopy(m)).encode()
    assert a == b


def _chromium(*args: str, profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _console_errors(stderr: str) -> list[str]:
    # Chromium logs page console messages as ...:CONSOLE(line)] "message", source: ...
    # and failed loads the page asked for as ...ERR_... lines mentioning file: URLs.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or ("net::ERR_" in line and "file://" in line)]


def _screenshot_pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def _render_in_chromium(page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str], str]:
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", page.as_uri(),
                     profile=tmp_path / "profile-shot")
    assert shot.is_file(), proc.stderr[-3000:]
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    return _screenshot_pixels(shot), _console_errors(proc.stderr + dom.stderr), dom.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path):
    from release_helpers import built_output

    page = built_output() / "android" / "report.html"
    pixels, errors, dom = _render_in_chromium(page, tmp_path)
    assert errors == []
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "the screenshot is blank"
    assert len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50, "the screenshot has almost no content"
    assert "digits 1.0.0 for android" in dom
    manifest = json.loads((built_output() / "android" / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        assert a["file"] in dom
    # The images decoded: Chromium gives a broken <img> no natural size; ours are all drawn.
    assert dom.count("data:image/png;base64,") >= 5


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_chromium_check_sees_console_errors_and_blank_pages(tmp_path):
    """The checks above can fail: a page with a script error, a missing image and nothing
    drawn trips each of them."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><body style='background:#fff'><img src='missing.png'>"
                   "<script>console.error('boom'); undefined_function();</script></body></html>")
    pixels, errors, _ = _render_in_chromium(bad, tmp_path)
    assert any("boom" in e for e in errors), errors
    assert pixels[..., :3].std() < 0.05
