"""The manifest model: the committed schema is the model's, documents read and written
keep their exact JSON, bad documents are refused with the field path, and the
measurement rows are typed variants told apart by `method`."""

from __future__ import annotations

import copy
import json

import pytest

from edgepack.errors import ConfigError
from edgepack.release.manifest import SCHEMA_FILE, check_manifest, load_manifest, write_manifest
from edgepack.release.manifest_model import (MEASUREMENT, Emulated, Estimated, Manifest, Measured, json_schema,
                                             schema_text)
from edgepack.release.packaging import RUN_TIMINGS, without_run_timings
from test_release_contracts import validate
from test_release_report import _estimate, _manifest


def _emulated() -> dict:
    return {"device": "pixel-7", "method": "emulated", "runner": "qemu", "cpu": "cortex-a76", "machine": "aarch64",
            "runtime": "onnxruntime 1.2", "threads": 1, "p50_ms": None, "p90_ms": None, "emulated_wall_p50_ms": 6.9,
            "timing": "emulated wall time under qemu (cortex-a76); not device latency",
            "parity": {"accuracy": 0.99, "agreement": 1.0, "max_abs_error": 0.3, "snr_db": 40.0, "samples": 540},
            "instructions": {"cpu": "cortex-a76", "method": "counted", "iterations": 10, "exact": True,
                             "window": {"instructions": 2951859, "simd_fp": 1595247, "dotprod": 1173760, "mmla": 0},
                             "per_inference": 295185.9, "simd_fp_share": 0.54, "dotprod_per_inference": 117376.0,
                             "mmla_per_inference": 0.0}}


def _measured() -> dict:
    return {"device": "raspberry-pi-4", "method": "measured", "runner": "ssh", "timing": "wall time over ssh",
            "machine": "aarch64", "runtime": "onnxruntime 1.2", "threads": 1, "iterations": 5, "import_ms": 120.5,
            "load_ms": 3, "first_inference_ms": 1.25, "p50": 0.5, "p90": 0.6, "p99": 0.7, "mean": 0.55, "std": 0.05,
            "peak_rss_mb": 60, "p50_ms": 0.5, "p90_ms": 0.6, "calibrated": "/x/calibration/raspberry-pi-4.json",
            "parity": {"samples": 16, "agreement": 1.0, "max_abs_error": 0.1, "snr_db": None,
                       "max_abs_diff_vs_build_host": 0.0},
            "ops": [{"op": "Conv", "ms_per_inference": 0.2, "nodes": 3, "share": 0.6}]}


def _full_manifest() -> dict:
    """A manifest with every kind of row and optional section a build, a profile and a
    package write (integers in float fields on purpose: they must stay integers)."""
    m = _manifest(3, 2)
    m["gates"] = {"passed": True, "failures": [], "latency": "no latency budget"}
    m["git"] = None
    m["latency_calibration"] = {"file": "calibration/pixel-7.json", "sha256": "a" * 64}
    m["artifacts"][0]["measurements"] += [_emulated(), _measured()]
    m["artifacts"][0]["export"] = {"ops": {"CONV_2D": 1}, "dynamic_dims": [], "weights": "per_channel",
                                   "fallbacks": [{"step": "capture", "taken": "non-strict", "reason": "strict failed"}]}
    m["artifacts"][1]["measurements"] = []
    m["artifacts"][2]["export"] = {"opset": 20, "nodes": 36, "simplify": {"tool": "onnxslim", "applied": False,
                                   "reason": "ValueError: x", "nodes_before": 36, "nodes_after": 36}}
    m["package"] = {"root": "edgepack-toy-android-2.0.0", "source_date_epoch": 1577836800, "signature": None,
                    "files": [{"path": "m0.tflite", "sha256": "0" * 64, "size_bytes": 1000}]}
    return m


def test_manifest_schema_file_is_generated_from_the_model():
    # Fails when the model changed and the schema was not regenerated:
    #   python -m edgepack.release.manifest_model > edgepack/release/schema/manifest.schema.json
    assert SCHEMA_FILE.read_text() == schema_text()


def _nodes(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v)


def test_every_nullable_enum_of_the_schema_admits_null():
    # A field typed `Literal[...] | None` is written as null when unset: its enum must
    # list null too, or every validator refuses the manifests the build writes.
    nullable_enums = [n for n in _nodes(json_schema()) if "enum" in n and "null" in (n.get("type") or [])]
    assert nullable_enums, "the schema has nullable enums (budgets.metric_direction at least)"
    assert all(None in n["enum"] for n in nullable_enums), [n["enum"] for n in nullable_enums]
    direction = json_schema()["$defs"]["BudgetsSection"]["properties"]["metric_direction"]
    assert validate(None, direction, json_schema()) == []
    assert validate("sideways", direction, json_schema()) != []


def test_manifest_model_writes_a_document_back_to_the_same_json():
    doc = _full_manifest()
    out = Manifest.model_validate(doc).to_json()
    assert json.dumps(out, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert out["artifacts"][0]["measurements"][2]["load_ms"] == 3 and isinstance(out["budgets"]["max_accuracy_drop_pt"], float)


def test_manifest_full_document_passes_the_published_schema():
    schema = json_schema()
    assert validate(_full_manifest(), schema, schema) == []


@pytest.mark.parametrize("change, path", [
    (lambda m: m["artifacts"][0]["measurements"][1].update(p50_ms=3.0), "artifacts[0].measurements[1].p50_ms"),
    (lambda m: m["artifacts"][0]["measurements"][0].update(method="guessed"), "artifacts[0].measurements[0]"),
    (lambda m: m["artifacts"][0]["measurements"][2].update(surprise=1), "artifacts[0].measurements[2].surprise"),
    (lambda m: m["artifacts"][1].update(sha256="nothex"), "artifacts[1].sha256"),
    (lambda m: m["artifacts"][1]["latency_ms"].pop("runtime"), "artifacts[1].latency_ms.runtime"),
    (lambda m: m["artifacts"][0]["export"]["fallbacks"][0].pop("reason"), "artifacts[0].export.fallbacks[0].reason"),
    (lambda m: m.update(latency_calibration={"file": "c.json"}), "latency_calibration.sha256"),
    (lambda m: m["evaluation"].update(reference_accuracy=1.5), "evaluation.reference_accuracy"),
    (lambda m: m["source"].update(parameters="10"), "source.parameters"),
    (lambda m: m["package"]["files"][0].update(path="../escape"), "package.files[0].path"),
    (lambda m: m["project"].update(version="1/../../../../evil"), "project.version"),
    (lambda m: m.update(target="../android"), "target"),
])
def test_check_manifest_names_the_file_and_the_first_bad_field(change, path):
    doc = _full_manifest()
    change(doc)
    with pytest.raises(ConfigError) as e:
        check_manifest(doc, what="dist/android/manifest.json")
    assert str(e.value).startswith(f"dist/android/manifest.json: {path}: ")
    assert "\n" not in str(e.value) and e.value.problems[0] == str(e.value).split(" (and ")[0]
    schema = json_schema()     # the generated schema refuses the same document
    assert validate(doc, schema, schema) != []


def test_check_manifest_refuses_a_package_root_other_than_the_release_name():
    doc = _full_manifest()
    doc["package"]["root"] = "../../elsewhere"
    with pytest.raises(ConfigError, match=r"package.root is '../../elsewhere'; a release of toy 2.0.0 for android "
                                          r"has root 'edgepack-toy-android-2.0.0'"):
        check_manifest(doc, what="m")


def test_check_manifest_lists_every_problem():
    doc = _full_manifest()
    del doc["target"]
    doc["artifacts"][2]["size_bytes"] = -1
    with pytest.raises(ConfigError, match=r"^m: target: missing \(and 1 more problem\)$") as e:
        check_manifest(doc, what="m")
    assert e.value.problems == ["m: target: missing", "m: artifacts[2].size_bytes: Input should be greater than or equal to 0"]


def test_check_manifest_keeps_the_plain_file_name_and_schema_checks():
    doc = _full_manifest()
    doc["artifacts"][0]["file"] = "../m0.tflite"
    with pytest.raises(ConfigError, match="artifact file name '../m0.tflite' is not a plain file name"):
        check_manifest(doc, what="m")
    with pytest.raises(ConfigError, match="schema is 'edgepack.manifest/2'; this edgepack reads 'edgepack.manifest/1'"):
        check_manifest({**_full_manifest(), "schema": "edgepack.manifest/2"}, what="m")
    with pytest.raises(ConfigError, match="m: expected a JSON object"):
        check_manifest([], what="m")


def test_manifest_export_takes_a_format_s_own_facts_but_checks_the_known_ones():
    doc = _full_manifest()
    doc["artifacts"][1]["export"] = {"ops": {"Conv": 2}, "fake_format_blocks": 3}
    assert Manifest.model_validate(doc).artifacts[1].export.model_extra == {"fake_format_blocks": 3}
    doc["artifacts"][1]["export"]["ops"] = {"Conv": "two"}
    with pytest.raises(ConfigError, match=r"artifacts\[1\]\.export\.ops\.Conv: "):
        check_manifest(doc, what="m")


def test_measurement_rows_become_their_variant_by_method():
    rows = Manifest.model_validate(_full_manifest()).artifacts[0].measurements
    assert [type(r) for r in rows] == [Estimated, Emulated, Measured]
    assert rows[1].instructions.window.dotprod == 1173760 and rows[2].parity.max_abs_diff_vs_build_host == 0.0
    assert isinstance(MEASUREMENT.validate_python(_estimate(1.0)), Estimated)


def test_measurement_variants_built_directly_write_their_method_and_fixed_nulls():
    row = _estimate(2.0)
    built = Estimated(**{k: v for k, v in row.items() if k not in ("method", "p90_ms")})
    assert built.to_json() == row
    emulated = Emulated(device="pixel-7", runner="qemu", cpu="cortex-a53", p50_ms=None, p90_ms=None)
    assert emulated.to_json() == {"device": "pixel-7", "method": "emulated", "runner": "qemu", "cpu": "cortex-a53",
                                  "p50_ms": None, "p90_ms": None}
    assert Measured(device="host", runner="host", p50_ms=0.1).to_json() == {"device": "host", "method": "measured",
                                                                          "runner": "host", "p50_ms": 0.1}


def test_without_run_timings_gives_a_valid_manifest_without_clock_figures():
    doc = _full_manifest()
    out = without_run_timings(doc)
    check_manifest(out, what="m")
    estimated, emulated, measured = out["artifacts"][0]["measurements"]
    assert estimated == doc["artifacts"][0]["measurements"][0]               # estimates are not clock figures
    assert not (set(emulated) | set(measured) | set(out["artifacts"][0]["latency_ms"])) & RUN_TIMINGS
    assert "omitted" in out["artifacts"][0]["latency_ms"] and "emulated_wall_p50_ms" not in emulated


def test_write_manifest_validates_before_replacing_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    doc = _full_manifest()
    written = write_manifest(path, doc)
    assert path.read_text() == json.dumps(doc, indent=2, sort_keys=True) + "\n" and written == doc
    assert load_manifest(path) == doc
    bad = copy.deepcopy(doc)
    bad["artifacts"][0]["accuracy"] = "high"
    with pytest.raises(ConfigError, match=r"manifest\.json: artifacts\[0\]\.accuracy: "):
        write_manifest(path, bad)
    assert json.loads(path.read_text()) == doc and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
