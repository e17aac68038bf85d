"""Compression recipes: validation before any work, per-stage gating, the stage cache,
snapshots, and the quantization options each format honours."""

import json

import numpy as np
import pytest

from conftest import DIGITS, assert_one_line_error, cli

STAGES_PRUNE = '''
[compress]
max_total_drop_pt = 50.0

[[compress.stages]]
pass = "prune"
method = "structured"
ratio = 0.5
fine_tune_epochs = 2
'''


def _with_compress(project, text):
    base = (project.root / "edgepack.toml").read_text()
    project.write_toml(base + text)


def test_recipe_with_unknown_pass_lists_the_valid_ones(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "prun"\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2,
                          "compress.stages[0].pass: unknown pass 'prun'", "cluster, distill, prune, quantize, reorganize")


def test_recipe_with_unknown_parameter_is_named(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.5\nratioo = 2\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2, "compress.stages[0].ratioo", "unknown key")


@pytest.mark.parametrize("ratio", ["0.0", "1.0", "1.5", "-0.2"])
def test_recipe_ratio_outside_zero_one_is_rejected(tiny_project, ratio):
    _with_compress(tiny_project, f'[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = {ratio}\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2, "compress.stages[0].ratio")


def test_quantize_stage_must_come_last(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "quantize"\n[[compress.stages]]\npass = "reorganize"\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2, "quantize stage must come last")


def test_fine_tuning_stage_without_training_hook_fails_before_work(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text().replace('training = "data.py:training"\n', "")
    tiny_project.write_toml(text + STAGES_PRUNE)
    run = cli("build", "-p", tiny_project.root)
    assert_one_line_error(run, 2, "data.training", "stage 1 (prune)")
    assert not (tiny_project.root / "dist").exists()
    assert not (tiny_project.root / ".edgepack-cache").exists()


def test_symmetric_activations_are_refused_for_formats_that_cannot_do_them(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "quantize"\nactivations = "symmetric"\n')
    run = cli("build", "-p", tiny_project.root, "-t", "android", "--dry-run")
    assert run.code == 2 and "Traceback" not in run.stderr
    assert "'symmetric' is not available for tflite" in run.stderr and "executorch" in run.stderr


def test_unknown_recipe_preset_lists_the_shipped_ones(tiny_project):
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--recipe", "tiny", "--dry-run"), 2,
                          "unknown recipe 'tiny'", "compact", "int8", "prune-distill-int8")


def test_distill_teacher_that_cannot_be_loaded_fails_with_exit_2(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "distill"\nepochs = 1\n'
                                 '[[compress.stages.teachers]]\nmodel = "model.py:build"\nweights = "missing.safetensors"\n')
    run = cli("build", "-p", tiny_project.root)
    assert_one_line_error(run, 2, "missing.safetensors")
    assert not (tiny_project.root / "dist").exists()


def test_distill_teacher_with_mismatched_outputs_fails_with_exit_2(tiny_project):
    (tiny_project.root / "other.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 7))\n")
    import torch
    from safetensors.torch import save_file

    save_file({"1.weight": torch.zeros(7, 16), "1.bias": torch.zeros(7)}, str(tiny_project.root / "other.safetensors"))
    _with_compress(tiny_project, '[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.5\n'
                                 '[[compress.stages]]\npass = "distill"\nepochs = 1\n'
                                 '[[compress.stages.teachers]]\nmodel = "other.py:build"\nweights = "other.safetensors"\n')
    run = cli("build", "-p", tiny_project.root)
    assert_one_line_error(run, 2, "stage 2 (distill): teacher 'other.py:build' outputs [1, 7]", "the model [1, 3]")
    # the prune stage before it never ran: no stage was computed or cached (the capture
    # step, before compression, may have remembered its capture beside them)
    assert not (tiny_project.root / ".edgepack-cache" / "stages").exists()
    assert "stage 1 prune: running" not in run.stderr


@pytest.mark.slow
def test_stage_over_its_budget_stops_the_build_with_exit_1(tmp_path):
    import shutil

    project = tmp_path / "digits"
    shutil.copytree(DIGITS, project, ignore=shutil.ignore_patterns("dist", ".edgepack-cache", "__pycache__"))
    with (project / "edgepack.toml").open("a") as f:
        f.write('[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.75\nmax_drop_pt = 2.0\n')
    run = cli("build", "-p", project)
    assert run.code == 1, run.stderr + run.stdout
    assert "stage 1 (prune)" in run.stderr and "exceeds the stage budget of 2 pt" in run.stderr
    assert "compression stages" in run.stdout  # the table explains the numbers
    assert not (project / "dist").exists()


@pytest.mark.slow
def test_second_build_reuses_the_cached_stages(tiny_project):
    _with_compress(tiny_project, STAGES_PRUNE)
    first = cli("build", "-p", tiny_project.root, "--json")
    assert first.code == 0, first.stderr
    second = cli("build", "-p", tiny_project.root, "--json")
    assert second.code == 0, second.stderr
    a = first.json()["targets"][0]["manifest"]["stages"]
    b = second.json()["targets"][0]["manifest"]["stages"]
    assert [s["cache"] for s in a] == ["-", "miss"]
    assert [s["cache"] for s in b] == ["-", "hit"]
    # the reused model is the same model
    assert a[1]["accuracy"] == b[1]["accuracy"] and a[1]["parameters"] == b[1]["parameters"] < a[0]["parameters"]
    first_art = first.json()["targets"][0]["manifest"]["artifacts"][0]
    second_art = second.json()["targets"][0]["manifest"]["artifacts"][0]
    assert first_art["sha256"] == second_art["sha256"]


def test_snapshot_round_trip_rebuilds_pruned_folded_and_tied_models(tmp_path):
    import torch
    from torch import nn

    from edgepack.compress import snapshot

    def fresh():
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * 16, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Dropout(0.1), nn.Linear(16, 3))

    torch.manual_seed(1)
    model = fresh()
    model[0] = nn.Conv2d(1, 5, 3, padding=1, bias=True)   # channels pruned, folded BatchNorm bias
    model[1] = nn.Identity()                              # the folded BatchNorm
    model[4] = nn.Linear(5 * 16, 16)                      # follows the pruned channels
    model[6].weight = model[5].weight                     # weight sharing: one tensor, two layers
    del model[7]                                          # dead module deleted from the tree
    model.eval()
    x = torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        expected = model(x)
    snapshot.save(model, fresh(), tmp_path, {"report": {"k": 1}})
    rebuilt, meta = snapshot.load(tmp_path, fresh)
    with torch.no_grad():
        got = rebuilt(x)
    assert meta == {"report": {"k": 1}}
    assert torch.equal(got, expected)
    assert rebuilt[6].weight is rebuilt[5].weight
    assert isinstance(rebuilt[1], nn.Identity) and rebuilt[0].out_channels == 5


@pytest.mark.slow
def test_compact_recipe_meets_its_goals_on_digits(tmp_path):
    run = cli("build", "-p", DIGITS, "-t", "android", "-o", tmp_path / "dist", "--recipe", "compact", "--json",
              "--no-latency-gate")
    assert run.code == 0, run.stderr
    manifest = run.json()["targets"][0]["manifest"]
    stages = manifest["stages"]
    assert [s["pass"] for s in stages] == ["-", "reorganize", "prune", "distill", "cluster"]
    assert stages[-1]["macs"] <= 0.5 * stages[0]["macs"]
    assert not any(s["report"].get("removed") for s in stages[:1])
    for a in manifest["artifacts"]:
        assert a["size_vs_fp32_weights"] <= 0.12, a
        assert a["accuracy_drop_pt"] <= 1.0, a
    assert manifest["recipe"]["name"] == "compact"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic"])
def test_onnx_precisions_run_and_keep_accuracy(tiny_project, precision):
    tiny_project.add_target("onnx-only", precision=precision)
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 0, run.stderr
    (a,) = run.json()["targets"][0]["manifest"]["artifacts"]
    assert a["precision"] == precision
    dtypes = a["export"]["initializers_by_dtype"]
    assert ("float16" in dtypes) if precision == "fp16" else ("int8" in dtypes)
    assert a["agreement"] >= 0.95


@pytest.mark.slow
def test_keep_float_leaves_named_layer_unquantized_in_onnx(tiny_project):
    _with_compress(tiny_project, '[[compress.stages]]\npass = "quantize"\nkeep_float = ["head"]\n')
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 0, run.stderr
    (a,) = run.json()["targets"][0]["manifest"]["artifacts"]
    assert a["export"]["float_nodes"], a["export"]
    import onnx

    model = onnx.load(str(tiny_project.root / "dist" / "onnx-only" / "tiny.onnx"))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert gemm, "the head stays a float Gemm"
    inits = {t.name: t for t in model.graph.initializer}
    weight = inits.get(gemm[0].input[1])
    assert weight is not None and weight.data_type == onnx.TensorProto.FLOAT


DYNAMIC_TARGET = '''
name = "dyn"
device = "pixel-7"
[[dynamic_dims]]
dim = 0
name = "batch"
max = 32
[[artifacts]]
format = "onnx"
[[artifacts]]
format = "executorch"
[[artifacts]]
format = "tflite"
dynamic = {tflite_dynamic}
'''


def _digits_copy(tmp_path):
    import shutil

    project = tmp_path / "digits"
    shutil.copytree(DIGITS, project, ignore=shutil.ignore_patterns("dist", ".edgepack-cache", "__pycache__"))
    (project / "targets").mkdir()
    return project


@pytest.mark.slow
def test_dynamic_batch_artifacts_run_at_two_sizes(tmp_path):
    project = _digits_copy(tmp_path)
    (project / "targets" / "dyn.toml").write_text(DYNAMIC_TARGET.format(tflite_dynamic="false"))
    run = cli("build", "-p", project, "-t", "dyn", "--json")
    assert run.code == 0, run.stderr
    arts = {a["format"]: a for a in run.json()["targets"][0]["manifest"]["artifacts"]}
    for fmt in ("onnx", "executorch"):
        checks = arts[fmt]["dynamic_check"]
        assert [c["size"] for c in checks] == [1, 7], checks
        for c in checks:  # the whole batch in one call agrees with the fp32 model
            assert c["agreement"] == 1.0 and c["max_abs_error"] < 0.5, c
        assert arts[fmt]["export"]["dynamic_dims"] == [{"dim": 0, "name": "batch", "min": 1, "max": 32}]
    assert arts["tflite"]["dynamic_check"] == [] and arts["tflite"]["export"]["dynamic_dims"] == []


@pytest.mark.slow
def test_dynamic_batch_where_the_converter_cannot_gives_a_clear_error_and_builds_the_others(tmp_path):
    project = _digits_copy(tmp_path)
    (project / "targets" / "dyn.toml").write_text(DYNAMIC_TARGET.format(tflite_dynamic="true"))
    run = cli("build", "-p", project, "-t", "dyn")
    assert run.code == 3, run.stderr
    assert "tflite: litert-torch cannot convert this model with dynamic dims ['batch']" in run.stderr
    assert "dynamic = false" in run.stderr and "Traceback" not in run.stderr
    assert not (project / "dist" / "dyn").exists()
    # The formats that can were still built and verified, set aside with the failure listed.
    aside = project / "dist" / "dyn.incomplete"
    manifest = json.loads((aside / "manifest.json").read_text())
    assert sorted(a["format"] for a in manifest["artifacts"]) == ["executorch", "onnx"]
    assert all(a["agreement"] > 0.95 for a in manifest["artifacts"])
    (failed,) = manifest["failed_artifacts"]
    assert failed["format"] == "tflite" and "dynamic dims" in failed["error"]
    assert not (aside / failed["file"]).exists() and manifest["gates"]["passed"] is False


def test_dynamic_dim_outside_the_input_shape_is_rejected(tiny_project):
    text = (tiny_project.root / "edgepack.toml").read_text().replace(
        "input_shape = [1, 1, 4, 4]", "input_shape = [1, 1, 4, 4]\ndynamic_dims = [{dim = 4, name = \"seq\", max = 8}]")
    tiny_project.write_toml(text)
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2, "dynamic_dims", "dim 4")
