"""A `torch.export` program (`model.program = "model.pt2"`) built at int8 in all three
formats through the real command line: a small trained CNN with batchnorm, a residual
add and a linear head, exported with a static batch of 1, as most saved programs are.
One build is shared by the assertions; each artifact is run again here, outside the
build, and compared with the fp32 program itself."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import TINY_DATA, cli

# A residual CNN small enough to train in a second on the tiny data (4x4, 3 classes).
MODEL = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(y + self.bn2(self.conv(y)))
        return self.head(y.flatten(1))
'''

PROJECT = '''
[project]
name = "residual"
version = "0.1.0"

[model]
program = "model.pt2"
input_shape = [1, 1, 4, 4]

[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"

[build]
targets = ["all-int8"]
warmup = 1
iterations = 2
'''

TARGET = '''
name = "all-int8"
device = "raspberry-pi-4"
[[artifacts]]
format = "tflite"
precision = "int8"
[[artifacts]]
format = "executorch"
precision = "int8"
[[artifacts]]
format = "onnx"
precision = "int8"
[budgets]
max_accuracy_drop_pt = 5.0
'''

# Top-1 agreement of each int8 artifact with the fp32 program on the 90 evaluation samples.
MIN_AGREEMENT = 0.95


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def residual_program(tmp_path_factory):
    """The project folder, its program (loaded back from the .pt2), and the build's result."""
    import torch

    root = tmp_path_factory.mktemp("pt2") / "residual"
    (root / "targets").mkdir(parents=True)
    (root / "model.py").write_text(MODEL)
    (root / "data.py").write_text(TINY_DATA)
    (root / "edgepack.toml").write_text(PROJECT)
    (root / "targets" / "all-int8.toml").write_text(TARGET)
    data = _load(root / "data.py", "residual_data")
    torch.manual_seed(0)
    model = _load(root / "model.py", "residual_model").Residual()
    x, y = map(torch.from_numpy, data.training())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(1, 1, 4, 4),)), str(root / "model.pt2"))
    (root / "model.py").unlink()  # the build has only the program to go on

    run = cli("build", "-p", root, "-o", root / "dist", "--json")
    assert run.code == 0, run.stderr
    return root, torch.export.load(str(root / "model.pt2")), run.json()


@pytest.mark.slow
def test_pt2_program_builds_int8_in_every_format(residual_program):
    root, _, result = residual_program
    artifacts = {a["format"]: a for a in result["targets"][0]["manifest"]["artifacts"]}
    assert sorted(artifacts) == ["executorch", "onnx", "tflite"]
    for fmt, artifact in artifacts.items():
        assert artifact["precision"] == "int8", fmt
        assert artifact["agreement"] >= MIN_AGREEMENT, (fmt, artifact["agreement"])
        assert (root / "dist" / "all-int8" / artifact["file"]).is_file()


@pytest.mark.slow
def test_pt2_program_artifacts_agree_with_the_fp32_program(residual_program):
    import torch

    from edgepack.devices.host import HostRunner

    root, program, result = residual_program
    x, _ = _load(root / "data.py", "residual_data_check").evaluation()
    with torch.no_grad():
        reference = np.concatenate([program.module()(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
    for artifact in result["targets"][0]["manifest"]["artifacts"]:
        path = root / "dist" / "all-int8" / artifact["file"]
        outputs = HostRunner().run(path, artifact["format"], x, warmup=1, iterations=1, threads=1).outputs
        agreement = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
        assert agreement >= MIN_AGREEMENT, (artifact["format"], agreement)
        snr = 10 * np.log10(np.sum(reference**2) / np.sum((outputs - reference) ** 2))
        assert snr > 20, (artifact["format"], snr)


def test_onnx_calibration_batches_follow_the_graphs_batch_dim():
    from onnx import TensorProto, helper

    from edgepack.errors import ToolchainError
    from edgepack.exporters.onnx import calibration_batches

    static = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    static4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, 4, 4])
    dynamic = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])
    # (size, stop): batches start at range(0, stop, size)
    assert calibration_batches(dynamic, 40) == (16, 40)  # 16, 16, then the last 8
    assert calibration_batches(static, 40) == (1, 40)
    assert list(range(0, calibration_batches(static4, 10)[1], 4)) == [0, 4]  # whole batches only
    with pytest.raises(ToolchainError, match="exactly 4"):
        calibration_batches(static4, 3)
