"""LiteRT int8 on the standard mobile ops (hard-swish, a squeeze-excite block with a
hard-sigmoid gate, residual add, concat, global mean), and the strict_int8 policy for
an op LiteRT only computes in float."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, cli, tiny_model_with_forward
from edgepack.devices.reference_models import HS, InvertedResidualV3

# The tiny net's int8 logits against torch's on 16 random inputs: measured 37.7 dB.
MIN_SNR_DB = 30.0


class MobileOps(nn.Module):
    """Every op of MobileNetV3's int8 path, at 32x32: a hard-swish stem, one inverted
    residual block with squeeze-excite (mean, hard-sigmoid, multiply) and its residual
    add, a concat and a global mean."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Hardswish())
        self.block = InvertedResidualV3(8, 3, 16, 8, True, HS, 1)
        self.side = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = torch.cat([x, self.side(x)], 1)
        return self.head(x.mean((2, 3)))


def _mobile_ops_model() -> nn.Module:
    torch.manual_seed(0)
    model = MobileOps().eval()
    assert model.block.use_res_connect
    return model


def test_decompose_hardsigmoid_computes_the_same_in_ops_the_quantizer_annotates():
    from edgepack.exporters._litert_quantizer import decompose_hardsigmoid

    model = _mobile_ops_model()
    x = torch.randn(4, 3, 32, 32) * 3
    gm = torch.export.export(model, (x,), strict=True).module()
    assert decompose_hardsigmoid(gm) == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.hardsigmoid.default not in targets
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)
    # litert-torch's add and mul annotators find nodes by the source call they came from
    sources = {n.target: n.meta["source_fn_stack"][-1][1] for n in gm.graph.nodes
               if n.op == "call_function" and "source_fn_stack" in n.meta}
    assert sources[torch.ops.aten.hardtanh.default] is nn.functional.hardtanh


def _export(fmt: str, model: nn.Module, calibration: np.ndarray, path: Path, *, precision: str = "int8",
            output_names: tuple[str, ...] = ("y",)) -> dict:
    """The exporter's details of `model` written to `path` (one input "x")."""
    from edgepack.exporters import ExportRequest, export

    request = ExportRequest(module=model, example=(calibration[:1],), calibration=(calibration,), precision=precision,
                            out_path=path, input_names=("x",), output_names=output_names, parent_sha256="")
    return export(fmt, request).details


@pytest.mark.slow
def test_litert_int8_is_full_integer_on_the_mobile_ops_and_agrees_with_torch(tmp_path):
    from edgepack.verify.metrics import snr_db

    model = _mobile_ops_model()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(64, 3, 32, 32)).astype(np.float32)
    details = _export("tflite", model, calibration, tmp_path / "m.tflite")
    assert details["float_ops"] == {}
    assert set(details["tensors_by_dtype"]) == {"int8", "int32"}, details["tensors_by_dtype"]
    # hard-swish x3, the SE gate's ADD and MUL and its scaling MUL, the residual ADD, concat, means
    assert details["ops"]["HARD_SWISH"] == 3 and details["ops"]["MUL"] == 2 and details["ops"]["ADD"] == 2
    assert details["ops"]["CONCATENATION"] == 1 and details["ops"]["MEAN"] == 2

    x = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    (got,) = _litert_outputs(tmp_path / "m.tflite", x)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    assert snr_db(reference, got) >= MIN_SNR_DB


def test_build_table_names_the_float_ops_of_an_int8_artifact():
    from edgepack.cli.tables import float_op_notes

    manifest = {"artifacts": [{"file": "m.tflite", "export": {"float_ops": {"MUL": 9, "ADD": 9}}},
                              {"file": "m.pte", "export": {}}, {"file": "n.tflite", "export": {"float_ops": {}}}]}
    assert float_op_notes(manifest) == ["m.tflite: ADD x9, MUL x9"]


# FLOOR has only a float kernel in LiteRT: the int8 model computes it between a
# DEQUANTIZE and a QUANTIZE, and the division after it (which litert-torch's quantizer
# does not annotate) with it, as a float MUL by 1/256. Flooring at 1/256 barely changes
# the function.
FLOOR_MODEL = tiny_model_with_forward('''        h = torch.relu(self.bn(self.conv(x)))
        return self.head((torch.floor(h * 256.0) / 256.0).flatten(1))''')

TFLITE_TARGET = '''
name = "tflite-only"
device = "pixel-7"
[[artifacts]]
format = "tflite"
precision = "int8"
[budgets]
max_accuracy_drop_pt = 5.0
'''


@pytest.mark.slow
def test_strict_int8_refuses_a_float_op_and_false_builds_it_naming_the_op(tiny_project):
    root: Path = tiny_project.root
    (root / "model.py").write_text(FLOOR_MODEL)   # same parameter names as the tiny model's weights
    (root / "targets" / "tflite-only.toml").write_text(TFLITE_TARGET)
    base = (root / "edgepack.toml").read_text().replace('targets = ["onnx-only"]', 'targets = ["tflite-only"]')
    tiny_project.write_toml(base)

    refused = cli("build", "-p", root, "-o", root / "dist")
    assert_one_line_error(refused, 3, "not full-integer int8", "float ops: FLOOR x1, MUL x1", "strict_int8 = false")

    tiny_project.write_toml(base + textwrap.dedent('''
        [[compress.stages]]
        pass = "quantize"
        strict_int8 = false
    '''))
    built = cli("build", "-p", root, "-o", root / "dist")
    assert built.code == 0, built.stderr
    assert "float ops in int8: tiny.tflite: FLOOR x1, MUL x1" in built.stdout
    manifest = json.loads((root / "dist" / "tflite-only" / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["export"]["float_ops"] == {"FLOOR": 1, "MUL": 1}
    assert manifest["recipe"]["quantize"]["strict_int8"] is False


# --------------------------------------------------------------------------- PReLU, softmax

class PReLUHeads(nn.Module):
    """MTCNN's pattern: PReLU after convolutions (per channel) and after a Linear (rank 2,
    one slope), then two heads, one through a softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.PReLU(8)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.fc_act = nn.PReLU()
        self.cls, self.box = nn.Linear(16, 2), nn.Linear(16, 4)
        with torch.no_grad():   # slopes of a trained net: distinct per channel, some near 0
            self.act.weight.copy_(torch.linspace(0.0, 0.5, 8))
            self.fc_act.weight.fill_(0.2)

    def forward(self, x):
        h = nn.functional.max_pool2d(self.act(self.conv(x)), 2)
        h = self.fc_act(self.fc(h.flatten(1)))
        return torch.softmax(self.cls(h), dim=1), self.box(h)


def _prelu_model() -> nn.Module:
    torch.manual_seed(0)
    return PReLUHeads().eval()


def test_decompose_prelu_and_softmax_rewrite_compute_the_same():
    from edgepack.exporters._litert_quantizer import decompose_prelu, softmax_as_annotated_op

    model = _prelu_model()
    x = torch.randn(4, 3, 10, 10) * 2
    gm = torch.export.export(model, (x,), strict=True).module()
    assert decompose_prelu(gm) == 2 and softmax_as_annotated_op(gm) == 1
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.prelu.default not in targets and torch.ops.aten.softmax.int not in targets
    assert torch.ops.aten._softmax.default in targets
    # the rewritten ReLUs read -x: none follows a convolution (litert-torch would fuse it)
    relus = [n for n in gm.graph.nodes if n.target == torch.ops.aten.relu.default]
    assert len(relus) == 2 and all(r.args[0].target == torch.ops.aten.mul.Tensor for r in relus)
    with torch.no_grad():
        for got, want in zip(gm(x), model(x)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _litert_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Each output of an int8 .tflite on float inputs, dequantized, samples concatenated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    si, zi = inp["quantization"]
    outs = interpreter.get_output_details()
    got: list[list[np.ndarray]] = [[] for _ in outs]
    for sample in x:
        interpreter.set_tensor(inp["index"], np.clip(np.round(sample[None] / si) + zi, -128, 127).astype(np.int8))
        interpreter.invoke()
        for i, o in enumerate(outs):
            so, zo = o["quantization"]
            got[i].append((interpreter.get_tensor(o["index"]).astype(np.float32) - zo) * so)
    return [np.concatenate(g) for g in got]


@pytest.mark.slow
def test_litert_int8_prelu_and_softmax_are_full_integer_and_agree_with_torch(tmp_path):
    from edgepack.verify.metrics import snr_db

    model = _prelu_model()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(64, 3, 10, 10)).astype(np.float32)
    details = _export("tflite", model, calibration, tmp_path / "m.tflite", output_names=("p", "box"))
    assert details["float_ops"] == {}
    assert set(details["tensors_by_dtype"]) == {"int8", "int32"}, details["tensors_by_dtype"]
    # each PReLU: MUL by -1 (the converter may fuse the ReLU into it), MUL by 1 - slope, ADD
    assert details["ops"]["SOFTMAX"] == 1 and details["ops"]["ADD"] == 2 and details["ops"]["MUL"] == 4
    x = rng.normal(size=(32, 3, 10, 10)).astype(np.float32)
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(x))]
    # outputs in signature order are not guaranteed by name here: match each by shape
    got = {g.shape[1]: g for g in _litert_outputs(tmp_path / "m.tflite", x)}
    # measured 52.7 dB (probabilities) and 37.5 dB (box) on these inputs
    assert snr_db(want[0], got[2]) >= 30.0 and snr_db(want[1], got[4]) >= 30.0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_executorch_lowers_a_prelu_after_a_linear_to_xnnpack(tmp_path, precision):
    # XNNPACK's channels-last pass refused a PReLU on a rank-2 tensor; edgepack gives it
    # a 4-d one (exporters/executorch.py) and the .pte computes what torch does.
    from executorch.runtime import Runtime

    from edgepack.verify.metrics import snr_db

    model = _prelu_model()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(64, 3, 10, 10)).astype(np.float32)
    details = _export("executorch", model, calibration, tmp_path / "m.pte", precision=precision, output_names=("p", "box"))
    assert details["delegated_subgraphs"] >= 1 and "_prelu_kernel" not in str(details["non_delegated_ops"])
    program = Runtime.get().load_program((tmp_path / "m.pte").read_bytes())   # must outlive its method
    method = program.load_method("forward")
    x = rng.normal(size=(8, 3, 10, 10)).astype(np.float32)
    got = [method.execute([torch.from_numpy(s[None])]) for s in x]
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(x))]
    for i in range(2):
        out = np.concatenate([g[i].numpy() for g in got])
        if precision == "fp32":
            np.testing.assert_allclose(out, want[i], rtol=1e-4, atol=1e-5)
        else:   # measured 56.1 dB (probabilities) and 37.3 dB (box)
            assert snr_db(want[i], out) >= 30.0


class FloatFrontEnd(nn.Module):
    """An audio net's shape: a Conv1d + ReLU kept float (keep_float) feeding int8 ones."""

    def __init__(self):
        super().__init__()
        self.front = nn.Conv1d(4, 16, 3, padding=1)
        self.body = nn.Conv1d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.body(torch.relu(self.front(x))))
        return self.head(h.mean(2))


@pytest.mark.slow
def test_executorch_runs_a_float_conv1d_relu_that_feeds_an_int8_one(tmp_path):
    # XNNPACK fused the ReLU into the float Conv1d and then took it for an int8 one: the
    # runtime refused the program ("Failed to create convolution node"). edgepack writes
    # that ReLU as a clamp (exporters/executorch.py), and the .pte computes what torch does.
    from executorch.runtime import Runtime

    from edgepack.compress.quantize_stage import QuantizeConfig
    from edgepack.exporters import ExportRequest, export
    from edgepack.verify.metrics import snr_db

    torch.manual_seed(0)
    model = FloatFrontEnd().eval()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(64, 4, 32)).astype(np.float32)
    request = ExportRequest(module=model, example=(calibration[:1],), calibration=(calibration,), precision="int8",
                            out_path=tmp_path / "m.pte", input_names=("x",), output_names=("y",), parent_sha256="",
                            quantize=QuantizeConfig(keep_float=("front",)))
    details = export("executorch", request).details
    assert details["int8_delegate_tensors"] >= 2 and details["delegated_subgraphs"] >= 1
    program = Runtime.get().load_program((tmp_path / "m.pte").read_bytes())   # must outlive its method
    method = program.load_method("forward")
    x = rng.normal(size=(16, 4, 32)).astype(np.float32)
    got = np.concatenate([method.execute([torch.from_numpy(s[None])])[0].numpy() for s in x])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert snr_db(want, got) >= 30.0


# --------------------------------------------------------------------------- F.relu6, SAME padding

class SamePadRelu6(nn.Module):
    """EfficientNet-Lite's pattern: TensorFlow "SAME" padding written as an explicit
    asymmetric pad before stride-2 convolutions (one depthwise), F.relu6, a global mean."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2)
        self.dw = nn.Conv2d(8, 8, 3, 2, groups=8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = nn.functional.relu6(self.stem(nn.functional.pad(x, [0, 1, 0, 1])))
        h = nn.functional.relu6(self.dw(nn.functional.pad(h, [0, 1, 0, 1])))
        return self.head(h.mean((2, 3)))


def test_relu6_as_hardtanh_computes_the_same():
    from edgepack.exporters._litert_quantizer import relu6_as_hardtanh

    torch.manual_seed(0)
    model = SamePadRelu6().eval()
    x = torch.randn(4, 3, 16, 16) * 3
    gm = torch.export.export(model, (x,), strict=True).module()
    assert relu6_as_hardtanh(gm) == 2
    assert torch.ops.aten.relu6.default not in [n.target for n in gm.graph.nodes]
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_litert_int8_f_relu6_before_a_mean_is_full_integer(tmp_path):
    # F.relu6 captured as aten.relu6 stayed float with the mean after it (RELU6, MEAN,
    # TRANSPOSE: EfficientNet-Lite0's LiteRT int8 was refused for them).
    from edgepack.verify.metrics import snr_db

    torch.manual_seed(0)
    model = SamePadRelu6().eval()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    details = _export("tflite", model, calibration, tmp_path / "m.tflite")
    assert details["float_ops"] == {} and "float32" not in details["tensors_by_dtype"], details["tensors_by_dtype"]
    assert details["ops"]["PAD"] == 2 and details["ops"]["DEPTHWISE_CONV_2D"] == 1
    x = rng.normal(size=(16, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    (got,) = _litert_outputs(tmp_path / "m.tflite", x)
    assert snr_db(want, got) >= 35.0   # measured 48.6 dB


# --------------------------------------------------------------------------- conv + ReLU6 as one int8 op

class WideRelu6(nn.Module):
    """Convolutions with BatchNorm whose statistics spread the pre-activation over tens
    (as in trained nets), each followed by F.relu6; a pointwise convolution, mean, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 5)
        for bn in (self.bn0, self.bn1):
            bn.weight.data.uniform_(4, 12)
            bn.bias.data.uniform_(-20, 2)

    def forward(self, x):
        h = nn.functional.relu6(self.bn0(self.stem(x)))
        h = nn.functional.relu6(self.bn1(self.dw(h)))
        return self.head(self.pw(h).mean((2, 3)))


def _wide_relu6():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return (WideRelu6().eval(), rng.normal(size=(64, 3, 16, 16)).astype(np.float32),
            rng.normal(size=(32, 3, 16, 16)).astype(np.float32))


def test_a_convolution_and_its_relu6_are_quantized_as_one_op():
    # torchao's XNNPACKQuantizer quantizes the convolution's raw output, then the clamp;
    # edgepack's (exporters/_clamp_fusion.py) only the clamp's output, as for a ReLU.
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgepack.exporters._xnnpack_quantizer import quantizer
    from edgepack.verify.metrics import snr_db

    model, calibration, x = _wide_relu6()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    snr = {}
    for name, q in (("torchao", XNNPACKQuantizer()), ("edgepack", quantizer())):
        gm = torch.export.export(model, (torch.from_numpy(calibration[:32]),),
                                 dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},)).module()
        prepared = prepare_pt2e(gm, q.set_global(get_symmetric_quantization_config(is_per_channel=True)))
        with torch.no_grad():
            prepared(torch.from_numpy(calibration))
        converted = convert_pt2e(prepared)
        convs = [n for n in converted.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.conv2d.default]
        quantized_raw = [c for c in convs if any("quantize_per_tensor" in str(u.target) for u in c.users)]
        if name == "edgepack":
            assert len(quantized_raw) == 1, quantized_raw   # only the pointwise convolution, which has no ReLU6
        with torch.no_grad():
            snr[name] = snr_db(want, converted(torch.from_numpy(x)).numpy())
    # measured 27.3 dB (torchao) and 35.6 dB (edgepack)
    assert snr["edgepack"] >= snr["torchao"] + 5.0, snr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "executorch"])
def test_int8_artifacts_fuse_relu6_into_the_convolution(tmp_path, fmt):
    from edgepack.verify.metrics import snr_db

    model, calibration, x = _wide_relu6()
    path = tmp_path / ("m.tflite" if fmt == "tflite" else "m.pte")
    details = _export(fmt, model, calibration, path)
    if fmt == "tflite":
        assert details["float_ops"] == {} and "RELU6" not in details["ops"], details["ops"]
        (got,) = _litert_outputs(path, x)
    else:
        from executorch.runtime import Runtime

        assert details["int8_delegate_tensors"] >= 4
        program = Runtime.get().load_program(path.read_bytes())
        method = program.load_method("forward")
        got = np.concatenate([method.execute([torch.from_numpy(s[None])])[0].numpy() for s in x])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert snr_db(want, got) >= 32.0   # measured 35.5 dB in both formats
