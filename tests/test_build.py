"""End to end: real exports, run in their own runtimes, against the reference model."""

import json

import numpy as np
import pytest

from conftest import DIGITS, assert_one_line_error, cli, load_sample_module
from edgepack.errors import ToolchainError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_build(digits_android):
    return digits_android


def test_digits_android_build_writes_three_int8_artifacts_and_manifest(digits_build):
    folder, _ = digits_build
    assert sorted(p.name for p in folder.iterdir()) == ["digits.onnx", "digits.pte", "digits.tflite", "manifest.json", "report.html", "testdata"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema"] == "edgepack.manifest/1"
    assert manifest["target"] == "android" and manifest["device_profile"] == "pixel-7"
    assert len(manifest["source"]["sha256"]) == 64
    assert {"torch", "executorch", "onnxruntime", "ai-edge-litert", "litert-torch"} <= set(manifest["toolchain"])
    import hashlib

    for a in manifest["artifacts"]:
        data = (folder / a["file"]).read_bytes()
        assert a["sha256"] == hashlib.sha256(data).hexdigest()
        assert a["size_bytes"] == len(data)
        assert a["precision"] == "int8"
        assert a["latency_ms"]["runner"] == "host" and a["latency_ms"]["p50"] > 0
        assert a["latency_ms"]["p90"] >= a["latency_ms"]["p50"]


def test_digits_int8_artifacts_keep_accuracy_within_budget(digits_build):
    _, result = digits_build
    manifest = result["targets"][0]["manifest"]
    reference = manifest["evaluation"]["reference_accuracy"]
    assert reference > 0.97  # the committed weights are a real, trained model
    for a in manifest["artifacts"]:
        assert a["evaluated_samples"] == 540
        assert a["accuracy_drop_pt"] <= 1.0, a
        assert a["agreement"] >= 0.98, a
        assert a["snr_db"] is not None and a["snr_db"] > 25.0, a  # int8, not bit-exact, but close
        assert a["size_vs_fp32_weights"] < 0.35, a


def test_digits_tflite_is_truly_int8(digits_build):
    from ai_edge_litert.interpreter import Interpreter

    folder, _ = digits_build
    interpreter = Interpreter(model_path=str(folder / "digits.tflite"))
    dtypes = {t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    assert "float32" not in dtypes
    assert "int8" in dtypes
    weights = [t for t in interpreter.get_tensor_details() if len(t["shape"]) >= 2 and len(t["quantization_parameters"]["scales"]) > 1]
    assert len(weights) == 5  # 3 conv + 2 linear kernels, each with per-channel scales
    assert weights and all(t["dtype"].__name__ == "int8" for t in weights)


def test_digits_onnx_has_int8_weights_and_qdq_nodes(digits_build):
    import onnx

    folder, _ = digits_build
    model = onnx.load(str(folder / "digits.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 5  # 3 conv + 2 linear weight tensors (plus zero points)


def test_digits_artifacts_agree_with_torch_when_run_independently(digits_build):
    """Load each artifact directly in its runtime (not through edgepack's runner) and
    compare with the torch model on real test images."""

    import onnxruntime as ort
    import torch
    from ai_edge_litert.interpreter import Interpreter
    from executorch.runtime import Runtime
    from safetensors.torch import load_file

    evaluation = load_sample_module(DIGITS, "data").evaluation
    build_model = load_sample_module(DIGITS, "model").build_model
    folder, _ = digits_build
    x, y = evaluation()
    x = x[:100]
    model = build_model()
    model.load_state_dict(load_file(str(DIGITS / "weights" / "digits.safetensors")))
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()

    options = ort.SessionOptions()
    # As the model card tells x86 users: exact int8 kernels, or a CPU without VNNI
    # saturates (tests/test_host_int8_kernels.py shows the difference).
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(folder / "digits.onnx"), options, providers=["CPUExecutionProvider"])
    onnx_out = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])

    method = Runtime.get().load_program(str(folder / "digits.pte")).load_method("forward")
    pte_out = np.concatenate([method.execute([torch.from_numpy(x[i : i + 1].copy())])[0].numpy() for i in range(len(x))])

    interp = Interpreter(model_path=str(folder / "digits.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], out["quantization"]
    rows = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], np.clip(np.round(x[i : i + 1] / si) + zi, -128, 127).astype(np.int8))
        interp.invoke()
        rows.append((interp.get_tensor(out["index"]).astype(np.float32) - zo) * so)
    tfl_out = np.concatenate(rows)

    spread = float(ref.max() - ref.min())
    for name, got in (("onnx", onnx_out), ("executorch", pte_out), ("tflite", tfl_out)):
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.98, name
        # int8 logits stay within 5% of the logit range of the fp32 model
        assert np.max(np.abs(got - ref)) < 0.05 * spread, (name, np.max(np.abs(got - ref)), spread)


def test_build_json_is_a_versioned_envelope(digits_build):
    _, result = digits_build
    assert result["schema"] == "edgepack.build/1"
    assert set(result) == {"schema", "project", "ok", "exit_code", "seconds", "targets"}
    assert result["ok"] is True and result["exit_code"] == 0
    (target,) = result["targets"]
    assert set(target) == {"target", "device", "passed", "failures", "failed_artifacts", "dist", "rejected", "manifest"}
    assert target["failed_artifacts"] == []


def test_failed_budget_exits_1_and_leaves_previous_dist_untouched(tiny_project):
    ok = cli("build", "-p", tiny_project.root)
    assert ok.code == 0, ok.stderr
    dist = tiny_project.root / "dist" / "onnx-only"
    before = {p.relative_to(dist): p.read_bytes() for p in dist.rglob("*") if p.is_file()}
    tiny_project.add_target("onnx-only", extra="max_size_bytes = 100")
    run = cli("build", "-p", tiny_project.root)
    assert run.code == 1, run.stderr
    assert "tiny.onnx: size" in run.stdout and "exceeds the budget of 100 bytes" in run.stdout
    assert {p.relative_to(dist): p.read_bytes() for p in dist.rglob("*") if p.is_file()} == before
    rejected = json.loads((tiny_project.root / "dist" / "onnx-only.rejected" / "manifest.json").read_text())
    assert rejected["gates"]["passed"] is False
    assert not [p for p in (tiny_project.root / "dist").iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_passing_build_removes_a_stale_rejected_folder(tiny_project):
    tiny_project.add_target("onnx-only", extra="max_size_bytes = 100")
    assert cli("build", "-p", tiny_project.root).code == 1
    tiny_project.add_target("onnx-only")
    assert cli("build", "-p", tiny_project.root).code == 0
    assert not (tiny_project.root / "dist" / "onnx-only.rejected").exists()


def test_accuracy_gate_names_artifact_and_numbers():
    from types import SimpleNamespace

    from edgepack.config.schema import Budgets
    from edgepack.pipeline.gate import accuracy_and_size
    from edgepack.pipeline.records import ArtifactRecord, ExportKey, Verified
    from edgepack.verify.metrics import Parity

    # Agreement and SNR within the int8 defaults: only the accuracy drop is over budget.
    parity = Parity(accuracy=0.95, reference_accuracy=0.97, agreement=0.99, max_abs_error=1.0, snr_db=25.0, samples=100)
    rec = ArtifactRecord(file="m.onnx", key=ExportKey("onnx", "int8"), artifact=SimpleNamespace(size_bytes=10),
                         verified=Verified(parity=parity, latency_ms={}, recorded=np.zeros((1, 2), np.float32)),
                         fp32_reference_bytes=40)
    (failure,) = accuracy_and_size(Budgets(max_accuracy_drop_pt=0.5, max_size_bytes=100), rec)
    assert "m.onnx" in failure and "95.00%" in failure and "97.00%" in failure and "2.00 pt" in failure and "0.5 pt" in failure
    (size_failure,) = accuracy_and_size(Budgets(max_accuracy_drop_pt=5.0, max_size_bytes=9), rec)
    assert "10 bytes" in size_failure and "9 bytes" in size_failure


def test_build_from_a_torch_export_program(tiny_project, tmp_path):
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("tiny_model_for_pt2", tiny_project.root / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build()
    model.load_state_dict(load_file(str(tiny_project.root / "weights.safetensors")))
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 4, 4),)), str(tiny_project.root / "model.pt2"))
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace('factory = "model.py:build"\nweights = "weights.safetensors"', 'program = "model.pt2"'))
    tiny_project.add_target("onnx-only", precision="fp32", drop=0.0)
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 0, run.stderr
    (artifact,) = run.json()["targets"][0]["manifest"]["artifacts"]
    assert artifact["accuracy"] == artifact["reference_accuracy"] > 0.9
    assert artifact["max_abs_error"] < 1e-4


def test_host_runner_reports_an_artifact_its_runtime_rejects(tmp_path):
    from edgepack.devices.host import HostRunner

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ToolchainError) as e:
        HostRunner().run(bad, "onnx", np.zeros((2, 1, 4, 4), np.float32), warmup=1, iterations=1, threads=1)
    assert "broken.onnx" in str(e.value) and e.value.exit_code == 3


@pytest.mark.slow
def test_device_run_diverging_from_the_host_fails_the_gate(digits_android):
    """An emulated run whose outputs differ from the host's recorded ones by more than the
    release tolerance fails the artifact; within the tolerance it passes."""
    from types import SimpleNamespace

    from edgepack.pipeline.gate import device_divergence
    from edgepack.pipeline.records import ArtifactRecord, ExportKey, Verified
    from edgepack.release.manifest_model import Emulated
    from edgepack.verify.metrics import Parity

    folder, _ = digits_android
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    atol = manifest["test_vectors"]["outputs"][entry["file"]]["atol"]
    recorded = np.load(folder / manifest["test_vectors"]["outputs"][entry["file"]]["file"])
    parity = Parity(accuracy=1.0, reference_accuracy=1.0, agreement=1.0, max_abs_error=0.0, snr_db=40.0, samples=16)

    def record(diff: float) -> ArtifactRecord:
        row = Emulated(device="pixel-7", runner="qemu", cpu="cortex-a76", p50_ms=None, p90_ms=None,
                       parity={"samples": 16, "max_abs_diff_vs_build_host": diff})
        return ArtifactRecord(file=entry["file"], key=ExportKey("onnx", "int8"),
                              artifact=SimpleNamespace(path=folder / entry["file"], details=entry["export"], size_bytes=1),
                              verified=Verified(parity=parity, latency_ms={}, recorded=recorded),
                              fp32_reference_bytes=1, measurements=(row,))

    assert device_divergence(record(atol / 2)) == []
    (failure,) = device_divergence(record(atol * 3))
    assert entry["file"] in failure and "cortex-a76" in failure and f"{atol:.4g}" in failure


def test_build_json_stdout_holds_only_the_document_whatever_the_code_prints(tiny_project):
    """Converters and project code print on the process's stdout, some from C (no Python
    redirect sees it): with --json, all of it goes to stderr and stdout parses as JSON."""
    model_py = tiny_project.root / "model.py"
    model_py.write_text(model_py.read_text() + '''

def chatty():
    import os
    print("python print on stdout")
    os.write(1, b"raw write on fd 1\\n")
    return Tiny()
''')
    text = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(text.replace('factory = "model.py:build"', 'factory = "model.py:chatty"'))
    run = cli("build", "-p", tiny_project.root, "--json")
    assert run.code == 0, run.stderr
    assert run.json()["ok"] is True
    assert "python print on stdout" in run.stderr and "raw write on fd 1" in run.stderr
