"""ONNX graph inputs and outputs carry the declared names even where an inner value of
the exported graph already holds one (a module named like the output)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from edgepack.exporters.onnx import name_graph_io


def _graph_with_an_inner_value_named(name: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("out0", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], [name]), helper.make_node("Neg", [name], ["out0"])]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


def test_name_graph_io_renames_a_clashing_inner_value_first():
    import onnxruntime as ort

    model = _graph_with_an_inner_value_named("embedding")
    name_graph_io(model.graph, ["tokens"], ["embedding"])
    onnx.checker.check_model(model, full_check=True)   # single assignment holds
    assert [i.name for i in model.graph.input] == ["tokens"] and [o.name for o in model.graph.output] == ["embedding"]
    assert [list(n.output) for n in model.graph.node] == [["embedding__inner"], ["embedding"]]
    session = ort.InferenceSession(model.SerializeToString())
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    (out,) = session.run(["embedding"], {"tokens": x})
    np.testing.assert_array_equal(out, -np.maximum(x, 0))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 3)

    def forward(self, ids):
        return self.proj(self.embedding(ids).mean(1))


@pytest.mark.slow
def test_export_names_the_output_after_a_module_of_the_same_name(tmp_path):
    import onnxruntime as ort

    from edgepack.exporters.onnx import export_fp32

    torch.manual_seed(0)
    model = _Encoder().eval()
    ids = np.array([[1, 2, 3, 4]], np.int64)
    export_fp32(model, (ids,), tmp_path / "m.onnx", input_names=("input_ids",), output_names=("embedding",))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    assert [o.name for o in session.get_outputs()] == ["embedding"]
    (out,) = session.run(["embedding"], {"input_ids": ids})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(ids)).numpy(), rtol=1e-5, atol=1e-6)
