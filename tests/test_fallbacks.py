"""Fallbacks are recorded, never silent: a static batch capture and the calibration
samples it leaves out, a strict capture that fails, an ONNX dynamic batch export that
fails, predictions made in chunks; and the build's table says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgepack.exporters._pt2e import as_tensor, capture_for_calibration, fallback_details


class FixedBatch(nn.Module):
    """Takes exactly its declared batch of 4: the reshape names the batch size."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x.reshape(4, 8))


class BreaksDynamo(nn.Module):
    """Traceable without Dynamo; a strict (Dynamo) capture refuses the explicit break."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        torch._dynamo.graph_break()
        return self.fc(x)


def test_capture_records_static_batch_and_the_samples_it_calibrates_on():
    example = (as_tensor(np.zeros((4, 8), np.float32)),)
    calibration = (np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32),)
    fallbacks = []
    _, batches = capture_for_calibration(FixedBatch().eval(), example, calibration, fallbacks=fallbacks)
    assert [f["step"] for f in fallbacks] == ["batch capture"] and fallbacks[0]["taken"] == "static"
    assert fallbacks[0]["reason"]
    details = fallback_details(fallbacks, calibration, batches, dynamic=False)
    assert details["calibration_samples_used"] == 8 and details["fallbacks"] == fallbacks


def test_capture_records_nothing_when_the_batch_is_dynamic():
    example = (as_tensor(np.zeros((1, 8), np.float32)),)
    calibration = (np.zeros((10, 8), np.float32),)
    fallbacks = []
    _, batches = capture_for_calibration(nn.Linear(8, 3).eval(), example, calibration, fallbacks=fallbacks)
    assert fallbacks == [] and fallback_details(fallbacks, calibration, batches, dynamic=False) == {}


def test_capture_records_a_strict_capture_that_fell_back_to_non_strict():
    example = (as_tensor(np.zeros((1, 8), np.float32)),)
    fallbacks = []
    capture_for_calibration(BreaksDynamo().eval(), example, (np.zeros((4, 8), np.float32),), strict=True,
                            fallbacks=fallbacks)
    assert [(f["step"], f["taken"]) for f in fallbacks] == [("strict capture", "non-strict")]


def test_predict_notes_when_it_falls_back_to_the_declared_batch():
    from edgepack.compress.evaluate import predict

    x = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
    model = FixedBatch().eval()
    notes = []
    out, = predict(model, x, declared_batch=4, notes=notes)
    with torch.no_grad():
        first, last = model(torch.from_numpy(x[:4])), model(torch.from_numpy(np.concatenate([x[8:], np.zeros((2, 8), np.float32)])))
    assert out.shape == (10, 3) and np.allclose(out[:4], first.numpy()) and np.allclose(out[8:], last.numpy()[:2])
    assert len(notes) == 1 and "chunks of the declared batch 4" in notes[0]
    notes = []
    predict(nn.Linear(8, 3).eval(), x, declared_batch=1, notes=notes)
    assert notes == []


def test_build_table_names_each_fallback_under_the_artifacts():
    from edgepack.cli.tables import fallback_notes, stage_notes

    manifest = {"calibration": {"samples": 256}, "artifacts": [
        {"file": "digits.tflite", "export": {"calibration_samples_used": 248, "fallbacks": [
            {"step": "batch capture", "taken": "static", "reason": "UserError: batch guard"}]}},
        {"file": "digits.onnx", "export": {"fallbacks": [
            {"step": "dynamic batch export", "taken": "static", "reason": "TorchExportError: x"}]}},
        {"file": "digits.pte", "export": {}}]}
    assert fallback_notes(manifest) == [
        "digits.tflite: calibrated on 248 of 256 samples: batch capture fell back to static (UserError: batch guard)",
        "digits.onnx: dynamic batch export fell back to static (TorchExportError: x)"]
    assert stage_notes([{"stage": 1, "name": "prune", "notes": ["cache entry ab was unreadable"]}]) == [
        "stage 1 (prune): cache entry ab was unreadable"]


@pytest.mark.slow
def test_onnx_export_records_a_static_batch_fallback(tmp_path):
    from edgepack.exporters.onnx import export_fp32

    fallbacks = []
    applied, _ = export_fp32(FixedBatch().eval(), (np.zeros((4, 8), np.float32),), tmp_path / "m.onnx",
                             input_names=("x",), output_names=("y",), fallbacks=fallbacks)
    assert applied == []
    assert [(f["step"], f["taken"]) for f in fallbacks] == [("dynamic batch export", "static")]
    assert "Error" in fallbacks[0]["reason"]


def test_onnx_symbolic_shape_inference_giving_up_is_recorded_and_leaves_the_working_folder_clean(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference cannot merge two inputs' unrelated batch
    symbols; it saves its partial model as sym_shape_infer_temp.onnx in the working
    directory before raising. The fallback is recorded and that file stays out of the
    user's folder."""
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepack.exporters.onnx import _pre_process

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n1", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n2", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "src.onnx"))
    (tmp_path / "work").mkdir()
    (tmp_path / "user").mkdir()
    monkeypatch.chdir(tmp_path / "user")
    fallbacks: list = []
    _pre_process(quant_pre_process, tmp_path / "src.onnx", tmp_path / "work" / "pre.onnx", fallbacks)
    assert [f["step"] for f in fallbacks] == ["symbolic shape inference"]
    assert "Incomplete symbolic shape inference" in fallbacks[0]["reason"]
    assert list((tmp_path / "user").iterdir()) == []
    assert (tmp_path / "work" / "pre.onnx").is_file()
