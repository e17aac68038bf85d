"""The capture step: the model's graph is captured once for every format before any
compression or calibration. A model torch.export cannot capture stops the build in one
line; a graph ONNX cannot translate stops the ONNX artifacts only, the others are built."""

from __future__ import annotations

import json
import time

from conftest import assert_one_line_error, cli, tiny_model_with_forward

# The tiny model's parameters, with a forward() that branches on a tensor's value:
# eager PyTorch runs it, torch.export cannot capture it.
BRANCHING_MODEL = tiny_model_with_forward('''        h = torch.relu(self.bn(self.conv(x)))
        if h.sum() > 1000.0:   # data-dependent Python control flow
            h = h * 0.5
        return self.head(h.flatten(1))''')

# ... and one with a pairwise distance (cdist) that torch.export captures, ExecuTorch
# runs and ONNX's translator has no function for.
CDIST_MODEL = tiny_model_with_forward('''        h = torch.relu(self.bn(self.conv(x)))
        rows = h.flatten(2)                                   # B x 8 channels x 16 positions
        spread = torch.cdist(rows, rows).mean((1, 2))         # B
        return self.head(h.flatten(1)) + 0.01 * spread[:, None]''')

TWO_FORMATS = '''
name = "two-formats"
device = "pixel-7"
[[artifacts]]
format = "executorch"
precision = "fp32"
[[artifacts]]
format = "onnx"
precision = "fp32"
[budgets]
max_accuracy_drop_pt = 100.0
'''


def _two_formats(tiny_project, model: str):
    root = tiny_project.root
    (root / "model.py").write_text(model)   # same parameter names as the tiny model's weights
    (root / "targets" / "two-formats.toml").write_text(TWO_FORMATS)
    tiny_project.write_toml((root / "edgepack.toml").read_text().replace('targets = ["onnx-only"]', 'targets = ["two-formats"]'))
    return root


def test_a_model_torch_export_cannot_capture_stops_the_build_in_one_line_before_compressing(tiny_project):
    root = _two_formats(tiny_project, BRANCHING_MODEL)
    started = time.perf_counter()
    run = cli("build", "-p", root, "-o", root / "dist")
    assert_one_line_error(run, 3, "torch.export could not capture the model", "model.program")
    assert time.perf_counter() - started < 300   # not after exporting and verifying each format
    assert "exporting" not in run.stderr and "compress" not in run.stderr.lower().split("error:")[0]
    assert not (root / "dist").exists() or not any((root / "dist").iterdir())   # nothing half-written


def test_a_graph_onnx_cannot_translate_fails_onnx_only_and_the_other_format_is_built(tiny_project):
    root = _two_formats(tiny_project, CDIST_MODEL)
    run = cli("build", "-p", root, "-o", root / "dist")
    assert run.code == 3, run.stderr
    assert "onnx cannot be built: onnx: translating the captured graph failed" in run.stderr
    assert "aten._cdist_forward" in run.stderr
    assert "exporting onnx" not in run.stderr   # stopped at capture, never exported
    folder = root / "dist" / "two-formats.incomplete"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["executorch"]
    (failed,) = manifest["failed_artifacts"]
    assert failed["format"] == "onnx" and failed["stage"] == "capture" and "aten._cdist_forward" in failed["error"]
    assert manifest["timings_s"]["capture"] > 0
    assert (folder / "tiny.pte").is_file() and not (folder / "tiny.onnx").exists()


def test_an_unchanged_model_is_captured_once_and_fresh_captures_again(tiny_project):
    root = tiny_project.root
    first = cli("build", "-p", root, "-o", root / "dist")
    assert first.code == 0, first.stderr
    assert "capturing the model's graph for onnx\n" in first.stderr
    again = cli("build", "-p", root, "-o", root / "dist")
    assert again.code == 0, again.stderr
    assert "capturing the model's graph for onnx: captured before, unchanged" in again.stderr
    fresh = cli("build", "-p", root, "-o", root / "dist", "--fresh")
    assert fresh.code == 0 and "capturing the model's graph for onnx\n" in fresh.stderr, fresh.stderr
    # new weights are a new model: captured again
    from safetensors.torch import load_file, save_file

    state = load_file(str(root / "weights.safetensors"))
    state["head.bias"] = state["head.bias"] + 0.01
    save_file(state, str(root / "weights.safetensors"))
    changed = cli("build", "-p", root, "-o", root / "dist")
    assert changed.code == 0 and "capturing the model's graph for onnx\n" in changed.stderr, changed.stderr


# ... and one with an LSTM over its feature map's positions (fixed weights made in
# forward(), so the tiny model's trained weights still load): LiteRT keeps it float.
LSTM_MODEL = tiny_model_with_forward('''        h = torch.relu(self.bn(self.conv(x)))
        seq = h.flatten(2).transpose(1, 2)                    # B x 16 positions x 8 channels
        zeros = seq.new_zeros(1, seq.shape[0], 8)
        weights = [seq.new_full((32, 8), 0.05), seq.new_full((32, 8), 0.05), seq.new_zeros(32), seq.new_zeros(32)]
        out, _, _ = torch.lstm(seq, (zeros, zeros), weights, True, 1, 0.0, False, False, True)
        return self.head(h.flatten(1)) + 0.01 * out.mean((1, 2))[:, None]''')

TFLITE_INT8_AND_ONNX = '''
name = "two-formats"
device = "pixel-7"
[[artifacts]]
format = "tflite"
precision = "int8"
[[artifacts]]
format = "onnx"
precision = "fp32"
[budgets]
max_accuracy_drop_pt = 100.0
'''


def test_a_recurrent_layer_refuses_the_full_integer_tflite_at_capture_and_the_rest_is_built(tiny_project):
    root = _two_formats(tiny_project, LSTM_MODEL)
    (root / "targets" / "two-formats.toml").write_text(TFLITE_INT8_AND_ONNX)
    run = cli("build", "-p", root, "-o", root / "dist", "--no-latency-gate")
    assert run.code == 3, run.stderr
    assert "tflite int8 cannot be built: tflite int8: the model has LSTM layers" in run.stderr
    assert "exporting tflite" not in run.stderr   # refused from the graph, never calibrated or converted
    folder = root / "dist" / "two-formats.incomplete"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx"]
    (failed,) = manifest["failed_artifacts"]
    assert (failed["format"], failed["stage"]) == ("tflite", "capture")
    assert "set strict_int8 = false" in failed["error"]
