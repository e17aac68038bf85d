"""Regression diff between two releases."""

from __future__ import annotations

import copy
import json

import pytest

from edgepack.errors import ConfigError
from edgepack.release.diff import Thresholds, diff_manifests
from release_helpers import cli
from test_release_report import _manifest


def _pair():
    old = _manifest(3, 1)
    return old, copy.deepcopy(old)


def _regressed(result) -> list[tuple[str, str]]:
    return [(c.item, c.field) for c in result.regressions]


def test_diff_of_identical_releases_has_no_changes():
    old, new = _pair()
    result = diff_manifests(old, new)
    assert result.changes == () and result.exit_code == 0


def test_diff_flags_accuracy_size_and_latency_beyond_thresholds_only():
    old, new = _pair()
    new["artifacts"][0]["accuracy"] -= 0.004          # 0.4 pt: within the 0.5 pt default
    new["artifacts"][1]["accuracy"] -= 0.006          # 0.6 pt: a regression
    new["artifacts"][1]["size_bytes"] = int(old["artifacts"][1]["size_bytes"] * 1.04)   # +4%: fine
    new["artifacts"][2]["size_bytes"] = int(old["artifacts"][2]["size_bytes"] * 1.10)   # +10%: regression
    new["artifacts"][0]["latency_ms"]["p50"] *= 2.0   # +100% and +0.1 ms on the same machine: regression
    result = diff_manifests(old, new)
    assert sorted(_regressed(result)) == [("executorch int8", "accuracy"), ("onnx int8", "size_bytes"),
                                          ("tflite int8", "latency_ms.p50")]
    assert result.exit_code == 1
    loose = diff_manifests(old, new, Thresholds(max_accuracy_drop_pt=1, max_size_increase_pct=20, max_latency_increase_pct=150))
    assert loose.exit_code == 0 and len(loose.changes) == len(result.changes)


def test_diff_does_not_compare_latency_across_machines_or_below_the_noise_floor():
    old, new = _pair()
    new["artifacts"][0]["latency_ms"].update(machine="aarch64", p50=5.0)
    new["artifacts"][1]["latency_ms"]["p50"] = old["artifacts"][1]["latency_ms"]["p50"] + 0.005   # +2.5%, tiny
    old["artifacts"][2]["latency_ms"]["p50"] = 0.004
    new["artifacts"][2]["latency_ms"]["p50"] = 0.008                                               # +100%, 4 us
    result = diff_manifests(old, new)
    assert result.exit_code == 0
    notes = {c.item: c.note for c in result.changes if c.field == "latency_ms.p50"}
    assert "not compared" in notes["tflite int8"]


def test_diff_reports_dropped_artifacts_as_regressions_and_toolchain_changes_as_facts():
    old, new = _pair()
    del new["artifacts"][2]
    new["toolchain"]["torch"] = "9.9"
    new["recipe"] = [{"pass": "prune", "config": {"sparsity": 0.5}}]
    result = diff_manifests(old, new)
    assert _regressed(result) == [("onnx int8", "present")]
    areas = {(c.area, c.item) for c in result.changes}
    assert ("toolchain", "torch") in areas and ("recipe", "recipe") in areas


def test_negative_threshold_is_bad_input():
    with pytest.raises(ConfigError, match="--max-size-increase-pct: must not be negative"):
        Thresholds(max_size_increase_pct=-1)


def test_diff_cli_exit_codes_and_json(tmp_path):
    old, new = _pair()
    new["artifacts"][0]["accuracy"] -= 0.05
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    proc = cli("diff", tmp_path / "old.json", tmp_path / "new.json", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "edgepack.diff/1" and doc["regressions"] == 1
    assert cli("diff", tmp_path / "old.json", tmp_path / "old.json").returncode == 0
    assert cli("diff", tmp_path / "old.json", tmp_path / "new.json", "--max-accuracy-drop-pt", "10").returncode == 0
    missing = cli("diff", tmp_path / "old.json", tmp_path / "nope.tar.gz")
    assert missing.returncode == 2 and "no such release archive" in missing.stderr
