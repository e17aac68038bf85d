"""`delegate` in a target's artifacts: validated per format, honoured by the exporter
(ExecuTorch: in the file) or the runtime (LiteRT, ONNX Runtime), and recorded as what
the verification actually ran on."""

import json
import shutil

import numpy as np
import pytest

from conftest import DIGITS, assert_one_line_error, cli, load_sample_module
from edgepack.devices.base import script_arguments
from edgepack.formats import get_format


def test_unknown_delegate_exits_2_listing_the_formats_valid_ones(tiny_project):
    tiny_project.add_target("onnx-only", extra="")
    path = tiny_project.root / "targets" / "onnx-only.toml"
    path.write_text(path.read_text().replace('precision = "int8"', 'precision = "int8"\ndelegate = "gpu"'))
    run = cli("build", "-p", tiny_project.root, "--dry-run")
    assert_one_line_error(run, 2, "onnx-only.toml", "artifacts[0]", "delegate 'gpu' is not available for onnx",
                          "valid: xnnpack, none")


def test_delegate_travels_to_the_runner_only_where_the_runtime_applies_it():
    common = dict(artifact="m", inputs="x.npy", outputs="y.npy", result="r.json", warmup=0, iterations=1, threads=1)
    assert script_arguments(get_format("tflite"), delegate="none", **common)[-2:] == ["--delegate", "none"]
    assert script_arguments(get_format("onnx"), delegate="xnnpack", **common)[-2:] == ["--delegate", "xnnpack"]
    # An ExecuTorch program carries its delegate; its native runner takes no such word.
    assert "--delegate" not in script_arguments(get_format("executorch"), delegate="none", **common)


def test_model_card_never_enables_a_delegate_the_build_could_not_verify():
    from edgepack.release.card import render

    signature = {"inputs": [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32", "quantization": None}],
                 "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32", "quantization": None}]}
    onnx = {"file": "m.onnx", "format": "onnx", "precision": "int8", "size_bytes": 10, "signature": signature,
            "delegate": {"requested": "xnnpack", "used": "none", "detail": "ONNX Runtime providers: CPUExecutionProvider"}}
    tflite = {"file": "m.tflite", "format": "tflite", "precision": "int8", "size_bytes": 10, "signature": signature,
              "delegate": {"requested": "none", "used": "none", "detail": "LiteRT built-in kernels (default delegates off)"}}
    card = render({"target": "android", "source": {"parameters": 1, "fp32_weight_bytes": 4}, "artifacts": [onnx, tflite]})
    assert "addXnnpack" not in card
    assert "Verified on the build host with: ONNX Runtime providers: CPUExecutionProvider." in card
    assert "The `android` target asks for delegate `xnnpack`; edgepack could not run the file with it" in card
    assert ".setUseXNNPACK(false)" in card and "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in card


NO_DELEGATE_TARGET = '''
name = "no-delegate"
device = "pixel-7"

[[artifacts]]
format = "executorch"
precision = "int8"
delegate = "none"

[[artifacts]]
format = "executorch"
precision = "fp32"
delegate = "none"

[[artifacts]]
format = "tflite"
precision = "int8"
delegate = "none"
'''


@pytest.fixture(scope="module")
def digits_without_delegate(tmp_path_factory):
    root = tmp_path_factory.mktemp("no-delegate")
    (root / "targets").mkdir()
    (root / "targets" / "no-delegate.toml").write_text(NO_DELEGATE_TARGET)
    run = cli("build", "-p", DIGITS, "-t", "no-delegate", "--target-dir", root / "targets", "-o", root / "dist", "--json")
    assert run.code == 0, run.stderr
    return root / "dist" / "no-delegate", run.json()["targets"][0]["manifest"]


@pytest.mark.slow
def test_executorch_without_delegate_has_no_xnnpack_in_the_file_and_matches_fp32(digits_without_delegate, digits_android):
    import torch
    from safetensors.torch import load_file

    folder, manifest = digits_without_delegate
    entries = {a["file"]: a for a in manifest["artifacts"]}
    default_pte = (digits_android[0] / "digits.pte").read_bytes()
    # The backend's id is stored by name in the program's delegate list.
    assert b"XnnpackBackend" in default_pte
    for name in ("digits-int8.pte", "digits-fp32.pte"):
        assert b"XnnpackBackend" not in (folder / name).read_bytes(), name
        assert entries[name]["export"]["backend"] == "none" and entries[name]["export"]["delegated_subgraphs"] == 0
        assert entries[name]["delegate"]["requested"] == entries[name]["delegate"]["used"] == "none"
        assert entries[name]["warnings"] == []   # no "ops left outside XNNPACK": none were meant to go there

    # Run each file in ExecuTorch's runtime directly (not through edgepack's runner) on
    # real images against the torch model.
    import ctypes
    import os

    import executorch
    from executorch.runtime import Runtime

    for root in executorch.__path__:   # int8 quantize/dequantize kernels, which no delegate absorbs here
        lib = os.path.join(root, "lib", "libexecutorch_kernels_quantized.so")
        if os.path.isfile(lib):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    x, _ = load_sample_module(DIGITS, "data").evaluation()
    x = np.ascontiguousarray(x[:100], dtype=np.float32)
    model = load_sample_module(DIGITS, "model").build_model()
    model.load_state_dict(load_file(str(DIGITS / "weights" / "digits.safetensors")))
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    spread = float(ref.max() - ref.min())
    for name, atol in (("digits-fp32.pte", 1e-4), ("digits-int8.pte", 0.05 * spread)):
        method = Runtime.get().load_program(str(folder / name)).load_method("forward")
        out = np.concatenate([method.execute([torch.from_numpy(x[i : i + 1].copy())])[0].numpy() for i in range(len(x))])
        # fp32: float rounding only; int8: within 5% of the fp32 logits' range, as the delegated file
        assert np.max(np.abs(out - ref)) < atol, (name, float(np.max(np.abs(out - ref))), atol)
        assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.98, name


@pytest.mark.slow
def test_litert_without_delegate_runs_builtin_kernels_and_says_so(digits_without_delegate, digits_android):
    folder, manifest = digits_without_delegate
    entry = next(a for a in manifest["artifacts"] if a["file"] == "digits.tflite")
    assert entry["delegate"] == {"requested": "none", "used": "none", "detail": "LiteRT built-in kernels (default delegates off)"}
    android = json.loads((digits_android[0] / "manifest.json").read_text())
    default = next(a for a in android["artifacts"] if a["format"] == "tflite")
    assert default["delegate"]["used"] == "xnnpack" and "delegate node(s)" in default["delegate"]["detail"]
    # The same file: the delegate is the runtime's choice, and the kernels differ.
    assert entry["sha256"] == default["sha256"]
    assert entry["snr_db"] != default["snr_db"] and entry["agreement"] >= 0.98


@pytest.mark.slow
def test_onnx_verification_names_the_provider_it_ran_on(digits_android):
    import onnxruntime as ort

    manifest = json.loads((digits_android[0] / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    assert entry["delegate"]["requested"] == "xnnpack"
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        assert entry["delegate"]["used"] == "xnnpack"
    else:
        assert entry["delegate"]["used"] == "none"
        assert entry["delegate"]["detail"].startswith("ONNX Runtime providers: CPUExecutionProvider")
        assert any("verified on 'none'" in w for w in entry["warnings"])
