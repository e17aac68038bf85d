"""Per-layer int8 sensitivity and keep_float = "auto", on a small net with one damaged
layer: a dead input channel whose weights are 200 times the others'. The channel is always
zero, so those weights never change the float outputs, but per-channel int8 scales every
output channel of the layer by them, and the rest of its weights round to a few levels."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from conftest import TINY_DATA, assert_one_line_error, cli

DAMAGED_MODEL = '''
import torch
from torch import nn


class Damaged(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.mid = nn.Linear(128, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(torch.relu(self.mid(torch.relu(self.conv(x)).flatten(1))))


def build():
    return Damaged()
'''

TARGET = '''
name = "all-int8"
device = "pixel-7"
[[artifacts]]
format = "executorch"
[[artifacts]]
format = "onnx"
'''

PROJECT = '''
[project]
name = "damaged"
version = "0.1.0"

[model]
factory = "model.py:build"
weights = "weights.safetensors"
input_shape = [1, 1, 4, 4]

[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"

[build]
targets = ["all-int8"]
warmup = 1
iterations = 3

[budgets]
# The ONNX artifact with `mid` float measured 17.2 dB (every layer int8: near 0 dB);
# ExecuTorch 46 dB, as predicted. Held to their own floors below. (LiteRT refuses
# keep_float: exporters/_keep_float.py.)
min_snr_db = { int8 = 15.0 }
'''

DAMAGED_LAYER = "mid"
OUTLIER = 200.0


def _load(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A project folder with the damaged net: trained briefly on the tiny 3-class data,
    then conv channel 7 made dead (zero weights and bias: exactly 0 before and after the
    ReLU, in every format) and the `mid` weights reading it set to OUTLIER."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("damaged")
    (root / "model.py").write_text(DAMAGED_MODEL)
    (root / "data.py").write_text(TINY_DATA)
    (root / "edgepack.toml").write_text(textwrap.dedent(PROJECT))
    (root / "targets").mkdir()
    (root / "targets" / "all-int8.toml").write_text(TARGET)
    model_mod, data = _load(root / "model.py", "damaged_model"), _load(root / "data.py", "damaged_data")
    torch.manual_seed(0)
    model = model_mod.build()
    x, y = map(torch.from_numpy, data.training())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model.conv.weight[7] = 0.0
        model.conv.bias[7] = 0.0
        model.mid.weight[:, 7 * 16 : 8 * 16] = OUTLIER
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "weights.safetensors"))
    return root, model, data


@pytest.fixture(scope="module")
def switchable(damaged):
    from edgepack.compress import switchable_int8
    from edgepack.compress.quantize_stage import QuantizeConfig

    _, model, data = damaged
    calibration, _ = data.calibration()
    return switchable_int8.build(model, np.zeros((1, 1, 4, 4), np.float32), calibration, QuantizeConfig())


def _reference(model, x):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_switchable_int8_all_off_is_the_float_model_and_all_on_the_pt2e_int8_model(damaged, switchable):
    _, model, data = damaged
    x, _ = data.evaluation()
    reference = _reference(model, x)
    switchable.set_int8_only(())
    # BatchNorm-free net: with every switch off the converted graph computes the float model.
    np.testing.assert_allclose(switchable.predict(x), reference, rtol=1e-5, atol=1e-5)
    switchable.set_float(())
    assert np.abs(switchable.predict(x) - reference).max() > 0.01


def test_sensitivity_ranks_the_damaged_layer_first(damaged, switchable):
    from edgepack.compress.sensitivity import analyse

    _, model, data = damaged
    x, _ = data.evaluation()
    ranked = analyse(switchable, x[:32], _reference(model, x[:32]))
    assert ranked.layers[0].layer == DAMAGED_LAYER
    first, second = ranked.layers[0], ranked.layers[1]
    # Measured: mid about 5 dB alone, the next layer above 40 dB.
    assert first.snr_db < 15.0 and second.snr_db > first.snr_db + 20.0, ranked
    assert first.weights == 128 * 32


def test_auto_search_keeps_the_damaged_layer_and_reports_the_cap(damaged, switchable):
    from edgepack.compress.mixed_precision import search

    _, model, data = damaged
    x, _ = data.evaluation()
    reference = _reference(model, x)
    ranking = (DAMAGED_LAYER, "head", "conv")
    found = search(switchable, ranking, x, reference, min_agreement_pct=98.0, min_snr_db=20.0, max_float_layers=2)
    assert found.met and found.keep_float == (DAMAGED_LAYER,)
    assert [s.float_layers for s in found.steps] == [(), (DAMAGED_LAYER,)]
    assert found.steps[0].snr_db < 20.0 <= found.steps[1].snr_db
    assert found.steps[1].extra_bytes == 3 * 128 * 32
    hopeless = search(switchable, ranking, x, reference, min_agreement_pct=98.0, min_snr_db=300.0, max_float_layers=2)
    assert not hopeless.met and len(hopeless.steps) == 3
    assert "up to 2 layer(s) in float" in hopeless.failure() and "max_float_layers" in hopeless.failure()


def test_keep_float_other_than_a_list_or_auto_is_refused(tiny_project):
    base = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(base + '\n[[compress.stages]]\npass = "quantize"\nkeep_float = "automatic"\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2,
                          "compress.stages[0].keep_float", "'automatic' is not valid", '"auto"')


def test_max_float_layers_without_auto_is_refused(tiny_project):
    base = (tiny_project.root / "edgepack.toml").read_text()
    tiny_project.write_toml(base + '\n[[compress.stages]]\npass = "quantize"\nmax_float_layers = 3\n')
    assert_one_line_error(cli("build", "-p", tiny_project.root, "--dry-run"), 2,
                          "compress.stages[0]", "'max_float_layers' is only used with keep_float = \"auto\"")


@pytest.mark.slow
def test_auto_keep_float_meets_the_int8_budget_in_executorch_and_onnx(damaged, tmp_path):
    root, _, _ = damaged
    text = (root / "edgepack.toml").read_text()
    (root / "edgepack.toml").write_text(text + '\n[[compress.stages]]\npass = "quantize"\nkeep_float = "auto"\n')
    try:
        run = cli("build", "-p", root, "-o", tmp_path / "dist", "--json")
    finally:
        (root / "edgepack.toml").write_text(text)
    assert run.code == 0, run.stderr
    manifest = run.json()["targets"][0]["manifest"]
    assert manifest["recipe"]["quantize"]["keep_float"] == "auto"
    artifacts = {a["format"]: a for a in manifest["artifacts"]}
    assert set(artifacts) == {"executorch", "onnx"}
    for fmt, a in artifacts.items():
        export = a["export"]
        if fmt != "onnx":   # ONNX records the nodes of the kept modules instead
            assert export["keep_float"] == [DAMAGED_LAYER], fmt
        assert export["sensitivity"]["layers"][0]["layer"] == DAMAGED_LAYER, fmt
        assert export["mixed_precision"]["keep_float"] == [DAMAGED_LAYER], fmt
        # The real artifacts, in their runtimes: ExecuTorch's as predicted (46 dB), ONNX
        # Runtime's within the budget (measured 17.2 dB; 0 dB with every layer int8).
        assert a["agreement"] >= 0.98 and a["snr_db"] >= (40.0 if fmt != "onnx" else 15.0), (fmt, a["agreement"], a["snr_db"])
    steps = artifacts["executorch"]["export"]["mixed_precision"]["steps"]
    assert steps[0]["snr_db"] < 5.0 and abs(steps[1]["snr_db"] - artifacts["executorch"]["snr_db"]) < 1.0, steps
    assert artifacts["onnx"]["export"]["float_nodes"]
    # Shown once under the build table (top 3 and each step) and in report.html.
    from edgepack.cli.tables import int8_notes

    notes = int8_notes(manifest)
    assert notes[0].startswith("int8 sensitivity") and f": {DAMAGED_LAYER} " in notes[0], notes
    assert any(line.strip().startswith(f"step 1: +{DAMAGED_LAYER}:") for line in notes), notes
    page = (tmp_path / "dist" / "all-int8" / "report.html").read_text()
    assert "Int8 sensitivity" in page and f"<td>{DAMAGED_LAYER}</td>" in page


@pytest.mark.slow
def test_the_damaged_layer_fails_the_int8_budget_when_quantized(damaged, tmp_path):
    """The control: without keep_float the same net's int8 ONNX artifact is below 15 dB."""
    root, _, _ = damaged
    target = root / "targets" / "all-int8.toml"
    text = target.read_text()
    target.write_text('name = "all-int8"\ndevice = "pixel-7"\n[[artifacts]]\nformat = "onnx"\n')
    try:
        run = cli("build", "-p", root, "-o", tmp_path / "dist", "--json")
    finally:
        target.write_text(text)
    assert run.code == 1, run.stderr
    (a,) = run.json()["targets"][0]["manifest"]["artifacts"]
    assert a["snr_db"] < 15.0
