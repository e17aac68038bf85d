"""The format registry, and a format added at test time (tests/npz_format.py, one module)
flowing through the plan, the build, the host runner, the manifest and the model card."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from npz_format import FORMAT as NPZ

from edgepack.errors import ConfigError, ToolchainError
from edgepack.formats import FORMATS, Registry, get_format
from edgepack.formats.onnx import FORMAT as ONNX


def test_formats_registry_names_the_builtin_formats_and_extensions():
    assert FORMATS.extensions() == {"tflite": ".tflite", "executorch": ".pte", "onnx": ".onnx"}
    assert FORMATS.by_extension(".pte").name == "executorch"
    assert all(set(f.precisions) == {"fp32", "fp16", "int8", "int8-dynamic"} for f in FORMATS)


def test_formats_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="format 'onnx' is registered twice"):
        Registry(ONNX, ONNX)
    with pytest.raises(ValueError, match=r"extension \.onnx is already format 'onnx'"):
        Registry(ONNX, replace(NPZ, extension=".onnx"))


def test_formats_unknown_name_lists_valid_formats():
    with pytest.raises(ConfigError, match="unknown format 'tfl'; valid formats: tflite, executorch, onnx"):
        get_format("tfl")


def test_formats_registered_is_forgotten_after_the_block():
    with FORMATS.registered(NPZ):
        assert get_format("npz") is NPZ
    assert "npz" not in FORMATS


def test_formats_import_loads_no_toolchain_nor_numpy():
    code = ("import sys; from edgepack.formats import FORMATS; [f.precisions for f in FORMATS]; "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx', 'executorch', 'litert_torch', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_in_a_target_must_be_registered():
    from edgepack.config.schema import ArtifactSpec

    with pytest.raises(ValueError, match="unknown format 'npz'; valid formats: tflite, executorch, onnx"):
        ArtifactSpec(format="npz", precision="fp32")
    with FORMATS.registered(NPZ):
        assert ArtifactSpec(format="npz", precision="fp32").format == "npz"


def test_export_refuses_a_precision_the_format_lacks(tmp_path):
    from edgepack.exporters import ExportRequest, export

    request = ExportRequest(module=None, example=(np.zeros((1, 4), np.float32),), calibration=(np.zeros((1, 4), np.float32),),
                            precision="int8", out_path=tmp_path / "m.npz", input_names=("x",), output_names=("y",),
                            parent_sha256="")
    with FORMATS.registered(NPZ), pytest.raises(ToolchainError, match="npz: precision 'int8' is not supported; valid: fp32, fp16"):
        export("npz", request)


def test_export_words_a_converter_failure_as_one_toolchain_error(tmp_path):
    from edgepack.exporters import ExportRequest, export

    request = ExportRequest(module=None, example=(np.zeros((1, 4), np.float32),), calibration=(np.zeros((1, 4), np.float32),),
                            precision="fp32", out_path=tmp_path / "m.npz", input_names=("x",), output_names=("y",),
                            parent_sha256="")
    with FORMATS.registered(NPZ), pytest.raises(ToolchainError) as err:
        export("npz", request)   # no module: the step's own exception
    assert str(err.value).startswith("npz: export (fp32) failed: AttributeError: ")
    assert err.value.stage == "export" and err.value.exit_code == 3


LINEAR_MODEL = '''
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
'''

NPZ_TARGET = '''
name = "npz-only"
device = "raspberry-pi-4"
[[artifacts]]
format = "npz"
precision = "fp32"
[[artifacts]]
format = "npz"
precision = "fp16"
[budgets]
max_accuracy_drop_pt = 5.0
'''


@pytest.fixture
def linear_project(tiny_project):
    import torch
    from safetensors.torch import save_file

    root = tiny_project.root
    (root / "model.py").write_text(LINEAR_MODEL)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():  # a classifier of the tiny data: bright top, bottom, left
        rows = torch.zeros(3, 1, 4, 4)
        rows[0, :, :2, :], rows[1, :, 2:, :], rows[2, :, :, :2] = 1, 1, 1
        model[1].weight.copy_(rows.reshape(3, 16) - rows.reshape(3, 16).mean(0))
        model[1].bias.zero_()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "weights.safetensors"))
    toml = (root / "edgepack.toml").read_text()
    toml = toml.replace('targets = ["onnx-only"]', 'targets = ["npz-only"]').replace(
        "input_shape = [1, 1, 4, 4]", 'input_shape = [1, 1, 4, 4]\ndynamic_dims = [{dim = 0, name = "batch", max = 8}]')
    (root / "edgepack.toml").write_text(toml)
    (root / "targets" / "npz-only.toml").write_text(NPZ_TARGET)
    return root


def test_a_format_registered_at_test_time_flows_through_plan_build_manifest_and_card(linear_project, tmp_path):
    from edgepack.api import build
    from edgepack.plan import make_plan
    from edgepack.release import card

    with FORMATS.registered(NPZ):
        plan = make_plan(linear_project, output_dir=tmp_path / "dist")
        assert plan.targets[0].files == {("npz", "fp32"): "tiny-fp32.npz", ("npz", "fp16"): "tiny-fp16.npz"}
        result = build(plan).targets[0]
        assert not result.failures, result.failures
        manifest = json.loads((result.dist / "manifest.json").read_text())
        readme = card.render(manifest)

    arts = {a["file"]: a for a in manifest["artifacts"]}
    assert sorted(arts) == ["tiny-fp16.npz", "tiny-fp32.npz"]
    fp32, fp16 = arts["tiny-fp32.npz"], arts["tiny-fp16.npz"]
    # The step the format maps each precision to wrote it; numpy, through the loader
    # file the runner imported, ran it and matched the torch model.
    assert fp32["export"]["dtype"] == "float32" and fp16["export"]["dtype"] == "float16"
    with np.load(result.dist / "tiny-fp16.npz") as z:
        assert z["weight"].dtype == np.float16
    assert fp32["latency_ms"]["runtime"] == f"numpy {np.__version__}"
    assert fp32["max_abs_error"] < 1e-5 and fp32["agreement"] == 1.0
    assert 1e-5 < fp16["max_abs_error"] < 1e-2
    assert fp32["accuracy"] > 0.9
    # The dynamic batch was checked through the same runner protocol, at two sizes.
    assert [c["size"] for c in fp32["dynamic_check"]] == [1, 7]
    assert all(c["max_abs_error"] < 1e-5 for c in fp32["dynamic_check"])
    # The format's signature reader and the toolchain packages it names.
    # Named as the project declares the input; the runtime's own name kept beside it.
    assert fp16["signature"]["inputs"] == [{"name": "input", "runtime_name": "x", "shape": ["batch", 16], "dtype": "float16",
                                            "quantization": None}]
    assert manifest["toolchain"]["safetensors"] not in ("", "not installed")
    # Replayed test vectors come from the same runner.
    recorded = np.load(result.dist / "testdata" / "tiny-fp32.npz.npy")
    inputs = np.load(result.dist / "testdata" / "inputs.npy")
    with np.load(result.dist / "tiny-fp32.npz") as z:
        np.testing.assert_allclose(recorded, inputs.reshape(len(inputs), -1) @ z["weight"].T + z["bias"], atol=1e-5)
    # The model card names the runtime and shows the format's snippet.
    assert "| `tiny-fp32.npz` | numpy (linear layer) | fp32 |" in readme
    assert 'z = np.load("tiny-fp16.npz")' in readme
    assert "npz" not in FORMATS


def test_host_runner_runs_a_format_through_its_loader_file(tmp_path):
    from edgepack.devices.host import HostRunner

    weight = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    bias = np.array([1.0, -1.0, 0.5], np.float32)
    np.savez(tmp_path / "m.npz", weight=weight, bias=bias)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with FORMATS.registered(NPZ):
        run = HostRunner().run(tmp_path / "m.npz", "npz", x, warmup=1, iterations=2, threads=1, batch=5)
    np.testing.assert_allclose(run.outputs, x @ weight.T + bias, rtol=1e-6)
    assert (run.runtime, run.runner, run.iterations) == ("numpy", "host", 2)
