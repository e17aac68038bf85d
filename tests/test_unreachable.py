"""Artifacts a project cannot reach are found by the plan, before any work: a target
listing one fails at once (exit 2), or with `[build] skip_unreachable = true` is built
without it and its manifest says which and why."""

from __future__ import annotations

import json

from conftest import DEFAULT_TOML, PROGRESS_LINE, assert_one_line_error, cli

KEEP_HEAD_FLOAT = '''
[[compress.stages]]
pass = "quantize"
keep_float = ["head"]
'''

TFLITE_AND_ONNX = '''
name = "{name}"
device = "pixel-7"
[[artifacts]]
format = "tflite"
precision = "int8"
{more}
[budgets]
max_accuracy_drop_pt = 5.0
'''

ONNX_INT8 = '''
[[artifacts]]
format = "onnx"
precision = "int8"
'''


def _project(tiny_project, *, skip: bool, with_onnx: bool = True):
    toml = DEFAULT_TOML.replace('targets = ["onnx-only"]', 'targets = ["phone"]')
    if skip:
        toml = toml.replace("[build]\n", "[build]\nskip_unreachable = true\n")
    tiny_project.write_toml(toml + KEEP_HEAD_FLOAT)
    (tiny_project.root / "targets" / "phone.toml").write_text(
        TFLITE_AND_ONNX.format(name="phone", more=ONNX_INT8 if with_onnx else ""))
    return tiny_project.root


def test_a_tflite_int8_under_a_keep_float_list_fails_the_plan_before_any_work(tiny_project):
    root = _project(tiny_project, skip=False)
    run = cli("build", "--project", root)
    assert_one_line_error(run, 2, "target phone lists tflite int8", "keep_float ['head']", "skip_unreachable = true")
    # Nothing was loaded, captured or exported: the plan refused it.
    assert not any(PROGRESS_LINE.match(line) for line in run.stderr.splitlines()), run.stderr
    assert not (root / "dist").exists()


def test_skip_unreachable_builds_the_others_and_the_manifest_lists_the_skipped_one(tiny_project):
    from edgepack.release.manifest_model import Manifest

    root = _project(tiny_project, skip=True)
    plan = cli("build", "--project", root, "--dry-run", "--json")
    assert plan.code == 0, plan.stderr
    planned = plan.json()["targets"][0]
    assert [(a["format"], a["precision"]) for a in planned["artifacts"]] == [("onnx", "int8")]
    assert [(s["format"], s["precision"]) for s in planned["skipped_artifacts"]] == [("tflite", "int8")]

    run = cli("build", "--project", root, "--no-latency-gate")
    assert run.code == 0, run.stdout + run.stderr
    assert "skipped: tflite int8 (unreachable, [build] skip_unreachable): quantize.keep_float ['head']" in run.stdout
    doc = json.loads((root / "dist" / "phone" / "manifest.json").read_text())
    Manifest.model_validate(doc)
    assert [a["file"] for a in doc["artifacts"]] == ["tiny.onnx"]
    assert doc["recipe"]["quantize"]["keep_float"] == ["head"]
    assert doc["artifacts"][0]["export"]["float_nodes"]   # the kept layer's ONNX nodes, left float
    (skipped,) = doc["skipped_artifacts"]
    assert (skipped["format"], skipped["precision"]) == ("tflite", "int8")
    assert "cannot keep layers float" in skipped["reason"]
    assert not (root / "dist" / "phone" / "tiny.tflite").exists()


def test_a_target_whose_every_artifact_is_unreachable_fails_the_plan_even_when_skipping(tiny_project):
    root = _project(tiny_project, skip=True, with_onnx=False)
    run = cli("build", "--project", root)
    assert_one_line_error(run, 2, "target phone: every artifact it lists is unreachable", "nothing would be built")


def test_only_a_list_makes_tflite_int8_unreachable_not_auto_nor_other_precisions():
    from edgepack.compress.quantize_stage import QuantizeConfig
    from edgepack.config.schema import ArtifactSpec
    from edgepack.unreachable import unreachable_artifacts

    specs = [ArtifactSpec(format=f, precision=p) for f in ("tflite", "executorch", "onnx")
             for p in ("fp32", "fp16", "int8", "int8-dynamic")]
    found = unreachable_artifacts(specs, QuantizeConfig(keep_float=("head",)))
    assert [(u.format, u.precision) for u in found] == [("tflite", "int8")]
    assert unreachable_artifacts(specs, QuantizeConfig(keep_float="auto")) == []
    assert unreachable_artifacts(specs, QuantizeConfig()) == []
