"""Exports are reused across builds when, and only when, everything that shapes the
file's bytes is the same; a damaged cache entry is rebuilt, never shipped."""

from __future__ import annotations

import hashlib
import json

from conftest import cli

REUSED = "reused an identical earlier export"


def _build(project, *extra):
    run = cli("build", "-p", project.root, "-t", "onnx-only", *extra)
    assert run.code == 0, run.stderr
    dist = project.root / "dist" / "onnx-only"
    return run, (dist / "tiny.onnx").read_bytes(), json.loads((dist / "manifest.json").read_text())


def _entries(project):
    return sorted((project.root / ".edgepack-cache" / "exports").glob("*/artifact.json"))


def test_second_build_reuses_the_export_and_ships_the_same_bytes(tiny_project):
    first, onnx1, manifest1 = _build(tiny_project)
    assert REUSED not in first.stderr and len(_entries(tiny_project)) == 1
    second, onnx2, manifest2 = _build(tiny_project)
    assert REUSED in second.stderr
    assert onnx2 == onnx1
    t1, t2 = manifest1["artifacts"][0]["timings_s"], manifest2["artifacts"][0]["timings_s"]
    assert (t1["export_reused"], t2["export_reused"]) == (False, True) and t2["export"] < t1["export"]
    assert "export reused" in second.stdout
    # the reused artifact is verified again on this build's data, with the same verdict
    a1, a2 = manifest1["artifacts"][0], manifest2["artifacts"][0]
    assert (a2["sha256"], a2["accuracy"], a2["snr_db"], a2["export"]) == (a1["sha256"], a1["accuracy"], a1["snr_db"], a1["export"])
    fresh, onnx3, _ = _build(tiny_project, "--fresh")
    assert REUSED not in fresh.stderr and onnx3 == onnx1


def test_a_changed_quantization_option_or_weights_is_a_new_export(tiny_project):
    _, per_channel, _ = _build(tiny_project)
    toml = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(toml + '\n[[compress.stages]]\npass = "quantize"\nweights = "per_tensor"\n')
    run, per_tensor, _ = _build(tiny_project)
    assert REUSED not in run.stderr and len(_entries(tiny_project)) == 2
    assert per_tensor != per_channel
    # the same options again: reused
    run, _, _ = _build(tiny_project)
    assert REUSED in run.stderr
    # retrained weights under the same file name: a new export
    import numpy as np
    from safetensors.numpy import load_file, save_file

    weights = tiny_project.root / "weights.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = (tensors[name] * np.float32(1.01)).astype(tensors[name].dtype)
    save_file(tensors, str(weights))
    run, _, _ = _build(tiny_project)
    assert REUSED not in run.stderr and len(_entries(tiny_project)) == 3


def test_a_damaged_cache_entry_is_rebuilt_not_shipped(tiny_project):
    _, good, _ = _build(tiny_project)
    (entry,) = _entries(tiny_project)
    stored = entry.parent / "tiny.onnx"
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    run, again, manifest = _build(tiny_project)
    assert REUSED not in run.stderr
    assert again == good
    assert manifest["artifacts"][0]["sha256"] == hashlib.sha256(good).hexdigest()
