"""Models with several named inputs and outputs: a float feature vector and int64 token
ids in, class logits and a regression score out. The config forms, the data hooks' forms
and their checks, and real int8 and fp32 builds into all three formats whose signatures
carry the declared names and whose outputs match torch."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, cli
from edgepack.config.loader import load_project
from edgepack.errors import ConfigError

TWO_HEADS_MODEL = '''
import torch
from torch import nn


class TwoHeads(nn.Module):
    """Features and token ids in; class logits and a regression score out."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.body = nn.Linear(6 + 8, 16)
        self.logits = nn.Linear(16, 3)
        self.score = nn.Linear(16, 1)

    def forward(self, features, token_ids):
        h = torch.relu(self.body(torch.cat([features, self.embed(token_ids).mean(1)], 1)))
        return self.logits(h), self.score(h)


class AsDict(TwoHeads):
    def forward(self, features, token_ids):
        logits, score = super().forward(features, token_ids)
        return {"score": score, "class_logits": logits}


def build():
    return TwoHeads()


def build_dict():
    return AsDict()
'''

# The class shows in a feature and in the first token id, so both inputs matter.
TWO_HEADS_DATA = '''
import numpy as np


def _make(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    features = rng.normal(0.0, 0.3, size=(n, 6)).astype(np.float32)
    features[np.arange(n), y] += 1.0
    ids = rng.integers(0, 16, size=(n, 5)).astype(np.int64)
    ids[:, 0] = y * 5
    return {"features": features, "token_ids": ids}, y.astype(np.int64)


def calibration():
    return _make(64, 1)


def evaluation():
    return _make(90, 2)


def evaluation_tuple():
    inputs, y = _make(90, 2)
    return (inputs["features"], inputs["token_ids"]), y


def evaluation_reordered_dict():
    inputs, y = _make(90, 2)
    return {"token_ids": inputs["token_ids"], "features": inputs["features"]}, y


def training():
    return _make(300, 3)


def missing_key():
    inputs, y = _make(8, 4)
    return {"features": inputs["features"]}, y


def extra_key():
    inputs, y = _make(8, 4)
    return {**inputs, "mask": inputs["token_ids"] > 0}, y


def float_ids():
    inputs, y = _make(8, 4)
    return {**inputs, "token_ids": inputs["token_ids"].astype(np.float32)}, y


def wrong_shape():
    inputs, y = _make(8, 4)
    return {**inputs, "token_ids": inputs["token_ids"][:, :4]}, y


def different_counts():
    inputs, y = _make(8, 4)
    return {**inputs, "token_ids": inputs["token_ids"][:7]}, y


def one_array():
    inputs, y = _make(8, 4)
    return inputs["features"], y


def evaluation_unlabelled():
    inputs, _ = _make(90, 2)
    return inputs


def score_stats(outputs, labels):
    """A project metric reading the second output by name."""
    return {"mean_score": float(outputs["score"].mean())}


def ids_beyond_int32():
    inputs, y = _make(8, 4)
    return {**inputs, "token_ids": inputs["token_ids"] + 2**40}, y
'''

INTERFACE = '''
[[model.inputs]]
name = "features"
shape = [1, 6]

[[model.inputs]]
name = "token_ids"
shape = [1, 5]
dtype = "int64"

[[model.outputs]]
name = "class_logits"

[[model.outputs]]
name = "score"
'''

TOML = '''
[project]
name = "twoheads"
version = "0.1.0"

[model]
factory = "model.py:{factory}"
weights = "weights.safetensors"
{interface}
[data]
calibration = "data.py:calibration"
evaluation = "data.py:{evaluation}"
{data}
[build]
targets = ["{target}"]
warmup = 1
iterations = 2
{budgets}'''

ALL_FORMATS_TARGET = '''
name = "all-formats"
device = "raspberry-pi-4"
{artifacts}
[budgets]
max_accuracy_drop_pt = 5
'''

INPUT_NAMES = ["features", "token_ids"]
OUTPUT_NAMES = ["class_logits", "score"]


def _train(folder: Path) -> None:
    """A few real training steps on both heads, so the outputs mean something."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    def module(name):
        spec = importlib.util.spec_from_file_location(f"two_heads_{name}", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    model, data = module("model"), module("data")
    torch.manual_seed(0)
    net = model.build()
    inputs, y = data.training()
    f, ids, y = torch.from_numpy(inputs["features"]), torch.from_numpy(inputs["token_ids"]), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        logits, score = net(f, ids)
        (torch.nn.functional.cross_entropy(logits, y) + ((score.squeeze(1) - y.float()) ** 2).mean()).backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "weights.safetensors"))


@pytest.fixture(scope="session")
def _two_heads_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two-heads-weights")
    (folder / "model.py").write_text(TWO_HEADS_MODEL)
    (folder / "data.py").write_text(TWO_HEADS_DATA)
    _train(folder)
    return folder / "weights.safetensors"


def make_project(root: Path, weights: Path, *, factory: str = "build", evaluation: str = "evaluation",
                 interface: str = INTERFACE, artifacts: tuple[tuple[str, str], ...] = (("onnx", "fp32"),),
                 data: str = "", budgets: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "model.py").write_text(TWO_HEADS_MODEL)
    (root / "data.py").write_text(TWO_HEADS_DATA)
    (root / "weights.safetensors").write_bytes(weights.read_bytes())
    (root / "edgepack.toml").write_text(textwrap.dedent(TOML.format(
        factory=factory, evaluation=evaluation, interface=interface, target="all-formats", data=data,
        budgets=budgets)))
    (root / "targets").mkdir()
    listed = "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f, p in artifacts)
    (root / "targets" / "all-formats.toml").write_text(ALL_FORMATS_TARGET.format(artifacts=listed))
    return root


@pytest.fixture
def two_heads(tmp_path, _two_heads_weights) -> Path:
    return make_project(tmp_path / "twoheads", _two_heads_weights)


# --------------------------------------------------------------------------- config


def _problems_of(root: Path, interface: str) -> list[str]:
    text = (root / "edgepack.toml").read_text().replace(INTERFACE, interface)
    (root / "edgepack.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_project(root)
    return e.value.problems or [str(e.value)]


BAD_INTERFACES = [
    (INTERFACE.replace('name = "token_ids"', 'name = "features"'), "model.inputs: ", "name 'features' is used twice"),
    (INTERFACE.replace('name = "token_ids"', 'name = "token ids"'), "model.inputs[1].name", "not a valid name"),
    (INTERFACE.replace('name = "score"', 'name = "features"'), "model: ", "'features' names both an input and an output"),
    ("input_shape = [1, 6]\n" + INTERFACE, "model: ", "not both"),
    ('output_name = "y"\n' + INTERFACE, "model: ", "[[model.outputs]] or output_name"),
    (INTERFACE.replace('dtype = "int64"', 'dtype = "int64"\ndynamic_dims = [{ dim = 2, name = "seq", max = 8 }]'),
     "model.inputs[1]", "dim 2 is outside shape [1, 5]"),
    (INTERFACE.replace('dtype = "int64"', 'dtype = "float64"'), "model.inputs[1].dtype", "float32"),
    (INTERFACE.replace("shape = [1, 5]", "shape = [2, 5]"), "model: ", "batch and must agree"),
    ("", "model: ", "give model.input_shape"),
]


@pytest.mark.parametrize("interface, where, what", BAD_INTERFACES, ids=[w for _, _, w in BAD_INTERFACES])
def test_config_interface_bad_form_names_the_field(two_heads, interface, where, what):
    problems = _problems_of(two_heads, interface)
    assert any(where in p and what in p for p in problems), problems


def test_config_interface_shorthand_and_tables_normalise_alike(two_heads):
    project = load_project(two_heads)
    assert [(s.name, s.shape, s.dtype) for s in project.model.input_specs] == [
        ("features", (1, 6), "float32"), ("token_ids", (1, 5), "int64")]
    assert project.model.output_names == ("class_logits", "score")
    text = (two_heads / "edgepack.toml").read_text().replace(
        INTERFACE, 'input_shape = [1, 6]\ninput_name = "features"\noutput_name = "class_logits"\n')
    (two_heads / "edgepack.toml").write_text(text)
    short = load_project(two_heads).model
    assert [(s.name, s.shape, s.dtype) for s in short.input_specs] == [("features", (1, 6), "float32")]
    assert short.output_names == ("class_logits",)


# --------------------------------------------------------------------------- data hooks


def test_data_hook_dict_tuple_and_key_order_give_the_same_split(two_heads):
    from edgepack.sources.data import load_split

    project = load_project(two_heads)
    splits = []
    for hook in ("evaluation", "evaluation_tuple", "evaluation_reordered_dict"):
        data = project.data.model_copy(update={"evaluation": f"data.py:{hook}"})
        splits.append(load_split(two_heads, project.model_copy(update={"data": data}), "evaluation", classes=3))
    for split in splits:
        assert list(split.inputs) == INPUT_NAMES
        assert split.inputs["token_ids"].dtype == np.int64 and split.inputs["features"].dtype == np.float32
        for name in INPUT_NAMES:
            np.testing.assert_array_equal(split.inputs[name], splits[0].inputs[name])
        np.testing.assert_array_equal(split.y, splits[0].y)


BAD_HOOKS = [
    ("missing_key", ["data.evaluation hook", "has no 'token_ids'", "features, token_ids"]),
    ("extra_key", ["data.evaluation hook", "has key 'mask', which is not an input"]),
    ("float_ids", ["input 'token_ids' are float32", "the model takes int64", "astype(np.int64)"]),
    ("wrong_shape", ["input 'token_ids' have shape [8, 4]", "[N, 5]", "model.inputs 'token_ids' shape = [1, 5]"]),
    ("different_counts", ["different numbers of samples", "features 8, token_ids 7"]),
    ("one_array", ["inputs are one ndarray", "the model takes 2 inputs (features, token_ids)"]),
]


@pytest.mark.parametrize("hook, fragments", BAD_HOOKS, ids=[h for h, _ in BAD_HOOKS])
def test_data_hook_bad_inputs_exit_2_with_one_line(two_heads, hook, fragments):
    text = (two_heads / "edgepack.toml").read_text().replace('evaluation = "data.py:evaluation"',
                                                               f'evaluation = "data.py:{hook}"')
    (two_heads / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", two_heads), 2, *fragments)
    assert not (two_heads / "dist").exists()


def test_data_hook_ids_beyond_the_declared_int_type_are_refused(two_heads):
    text = (two_heads / "edgepack.toml").read_text().replace('dtype = "int64"', 'dtype = "int32"')
    text = text.replace('evaluation = "data.py:evaluation"', 'evaluation = "data.py:ids_beyond_int32"')
    (two_heads / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", two_heads), 2, "input 'token_ids'", "outside int32's range")


def test_forward_that_takes_fewer_inputs_than_declared_is_named(two_heads):
    extra = INTERFACE + '\n[[model.inputs]]\nname = "mask"\nshape = [1, 5]\ndtype = "bool"\n'
    text = (two_heads / "edgepack.toml").read_text().replace(INTERFACE, extra)
    (two_heads / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", two_heads), 2, "model.inputs", "forward() takes (features, token_ids)",
                          "3 input(s) (features, token_ids, mask)")


def test_forward_failing_on_the_declared_dtypes_names_every_input(two_heads):
    text = (two_heads / "edgepack.toml").read_text().replace('dtype = "int64"', 'dtype = "float32"')
    (two_heads / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", two_heads), 2, "model.inputs", "token_ids [1, 5] float32")


def test_output_count_other_than_declared_is_named(two_heads):
    text = (two_heads / "edgepack.toml").read_text().replace('\n[[model.outputs]]\nname = "score"\n', "\n")
    (two_heads / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", two_heads), 2, "returns 2 output(s)", "declares 1 (class_logits)")


# --------------------------------------------------------------------------- real builds

# How close each artifact's outputs are to torch's on the 90 evaluation samples, relative
# to the output's largest magnitude (at least 1). fp32: float rounding (measured 2e-6).
# int8: measured 1.10 on the logits (35 dB SNR) and 0.11 on the score (37 dB) in all
# three formats, a few quantization steps; 0.25 of the range is far below what a wrong
# input order or a quantized token id gives, and no class flips beyond 2 %.
FP32_ATOL = 1e-4
INT8_ATOL = 0.25
FORMATS = ("tflite", "executorch", "onnx")


@pytest.fixture(scope="module")
def two_heads_build(tmp_path_factory, _two_heads_weights):
    root = make_project(tmp_path_factory.mktemp("two-heads-build") / "twoheads", _two_heads_weights,
                        artifacts=tuple((f, p) for p in ("int8", "fp32") for f in FORMATS))
    run = cli("build", "-p", root, "--json")
    assert run.code == 0, run.stderr
    dist = root / "dist" / "all-formats"
    return root, dist, json.loads((dist / "manifest.json").read_text())


def _torch_outputs(root: Path):
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("two_heads_check_model", root / "model.py")
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    data_spec = importlib.util.spec_from_file_location("two_heads_check_data", root / "data.py")
    data = importlib.util.module_from_spec(data_spec)
    data_spec.loader.exec_module(data)
    net = model.build()
    net.load_state_dict(load_file(str(root / "weights.safetensors")))
    inputs, _ = data.evaluation()
    with torch.no_grad():
        out = net.eval()(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))
    return tuple(inputs[n] for n in INPUT_NAMES), tuple(o.numpy() for o in out)


@pytest.mark.slow
def test_build_manifest_lists_inputs_and_outputs_in_declared_order(two_heads_build):
    _, _, m = two_heads_build
    src = m["source"]
    assert [(i["name"], i["shape"], i["dtype"]) for i in src["inputs"]] == [
        ("features", [1, 6], "float32"), ("token_ids", [1, 5], "int64")]
    assert [(o["name"], o["shape"]) for o in src["outputs"]] == [("class_logits", [1, 3]), ("score", [1, 1])]
    assert len(m["artifacts"]) == 6
    for a in m["artifacts"]:
        sig = a["signature"]
        assert [t["name"] for t in sig["inputs"]] == INPUT_NAMES, (a["file"], sig)
        assert [t["name"] for t in sig["outputs"]] == OUTPUT_NAMES, (a["file"], sig)
        # The int input stays int64 in every artifact, never quantized.
        ids = sig["inputs"][1]
        assert ids["dtype"] == "int64" and ids["quantization"] is None, (a["file"], ids)
        # Parity per output, by declared name and in that order.
        assert list(a["outputs"]) == OUTPUT_NAMES and all(o["snr_db"] > 20 for o in a["outputs"].values())
    pte = next(a for a in m["artifacts"] if a["file"].endswith("int8.pte"))
    assert [t["runtime_name"] for t in pte["signature"]["inputs"]] == ["input_0", "input_1"]


@pytest.mark.slow
def test_build_tflite_signature_and_onnx_graph_carry_the_declared_names(two_heads_build):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    _, dist, _ = two_heads_build
    for precision in ("int8", "fp32"):
        interpreter = Interpreter(model_path=str(dist / f"twoheads-{precision}.tflite"))
        assert interpreter.get_signature_list() == {
            "serving_default": {"inputs": INPUT_NAMES, "outputs": OUTPUT_NAMES}}
        ids = interpreter.get_signature_runner().get_input_details()["token_ids"]
        assert ids["dtype"] == np.int64
        graph = onnx.load_model(str(dist / f"twoheads-{precision}.onnx")).graph
        assert [i.name for i in graph.input] == INPUT_NAMES
        assert [o.name for o in graph.output] == OUTPUT_NAMES
        assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_build_each_artifact_matches_torch_on_every_output(two_heads_build, fmt, precision):
    from edgepack.devices.base import run_declared
    from edgepack.devices.host import HostRunner
    from edgepack.formats import get_format

    root, dist, _ = two_heads_build
    inputs, expected = _torch_outputs(root)
    path = dist / f"twoheads-{precision}{get_format(fmt).extension}"
    run = run_declared(HostRunner(), path, fmt, inputs, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                       warmup=0, iterations=1, threads=1)
    atol = FP32_ATOL if precision == "fp32" else INT8_ATOL
    for name, got, want in zip(OUTPUT_NAMES, run.outputs, expected):
        assert got.shape == want.shape, name
        err = float(np.max(np.abs(got - want)))
        assert err <= atol * max(1.0, float(np.abs(want).max())), (fmt, precision, name, err)
    agree = float(np.mean(run.outputs[0].argmax(1) == expected[0].argmax(1)))
    assert agree >= 0.98, (fmt, precision, agree)


@pytest.mark.slow
def test_build_release_verifies_by_rerunning_named_test_vectors(two_heads_build, tmp_path):
    root, dist, m = two_heads_build
    assert m["test_vectors"]["inputs"]["file"] == "testdata/inputs.npz"
    with np.load(dist / "testdata" / "inputs.npz") as tv:
        assert tv.files == INPUT_NAMES and tv["token_ids"].dtype == np.int64
    archive = tmp_path / "release.tar.gz"
    run = cli("package", "-p", root, "-t", "all-formats", "--archive", archive)
    assert run.code == 0, run.stderr
    check = cli("verify", archive, "--run", "--json")
    assert check.code == 0, check.stderr + check.stdout
    runs = check.json()["runs"]
    assert len(runs) == 6 and all(r["ok"] for r in runs), runs


@pytest.mark.slow
def test_build_from_a_tuple_hook_gives_the_same_artifacts_as_from_a_dict_hook(two_heads_build, tmp_path,
                                                                               _two_heads_weights):
    _, _, m = two_heads_build
    root = make_project(tmp_path / "twoheads", _two_heads_weights, evaluation="evaluation_tuple",
                        artifacts=(("onnx", "fp32"), ("tflite", "fp32")))
    run = cli("build", "-p", root)
    assert run.code == 0, run.stderr
    other = json.loads((root / "dist" / "all-formats" / "manifest.json").read_text())
    assert other["evaluation"]["inputs"] == m["evaluation"]["inputs"]
    expected = {a["format"]: a["sha256"] for a in m["artifacts"] if a["precision"] == "fp32"}
    assert {a["format"]: a["sha256"] for a in other["artifacts"]} == {f: expected[f] for f in ("onnx", "tflite")}


@pytest.mark.slow
def test_build_forward_returning_a_dict_is_read_by_the_declared_names(tmp_path, _two_heads_weights):
    root = make_project(tmp_path / "twoheads", _two_heads_weights, factory="build_dict")
    run = cli("build", "-p", root)
    assert run.code == 0, run.stderr
    m = json.loads((root / "dist" / "all-formats" / "manifest.json").read_text())
    (onnx,) = m["artifacts"]
    assert [t["name"] for t in onnx["signature"]["outputs"]] == OUTPUT_NAMES
    assert [o["shape"] for o in m["source"]["outputs"]] == [[1, 3], [1, 1]]
    assert onnx["max_abs_error"] <= FP32_ATOL and onnx["agreement"] == 1.0


# An unlabelled project (task "none") with two inputs and two outputs: no label metric,
# every output gated by its own declared tolerance against the fp32 model, the metric
# hook reading an output by name. int8 score errors were measured up to 0.11 (above);
# 0.15 + 0.1 |ref| holds for nearly all of them, and the logits keep ~35 dB.
UNLABELLED_DATA = """task = "none"
metric = "data.py:score_stats"
"""
UNLABELLED_BUDGETS = """
[budgets.outputs.score]
atol = 0.15
rtol = 0.1
min_within_pct = 90

[budgets.outputs.class_logits]
min_snr_db = { int8 = 20 }
"""


@pytest.mark.slow
def test_build_unlabelled_two_inputs_two_outputs_gates_each_output_by_name(tmp_path, _two_heads_weights):
    from edgepack.devices.base import run_declared
    from edgepack.devices.host import HostRunner
    from edgepack.formats import get_format

    root = make_project(tmp_path / "twoheads", _two_heads_weights, evaluation="evaluation_unlabelled",
                        artifacts=tuple((f, "int8") for f in FORMATS), data=UNLABELLED_DATA,
                        budgets=UNLABELLED_BUDGETS)
    run = cli("build", "-p", root, "--json")
    assert run.code == 0, run.stderr + run.stdout
    dist = root / "dist" / "all-formats"
    m = json.loads((dist / "manifest.json").read_text())
    assert m["evaluation"]["task"] == "none" and "labels_sha256" not in m["evaluation"]
    assert [i["name"] for i in m["evaluation"]["inputs"]] == INPUT_NAMES
    inputs, expected = _torch_outputs(root)
    assert m["evaluation"]["reference_metrics"] == {"mean_score": pytest.approx(float(expected[1].mean()), abs=1e-5)}
    assert len(m["artifacts"]) == 3
    for a in m["artifacts"]:
        assert a["task"] == "none" and a["accuracy"] is None and a["agreement"] is None
        assert list(a["outputs"]) == OUTPUT_NAMES
        assert {c["budget"] for c in a["gates"]} == {
            "outputs.score.within_tolerance", "outputs.class_logits.min_snr_db"}
        assert all(c["passed"] for c in a["gates"]), a["gates"]
        # Every figure is the artifact's own: its outputs, run here in its runtime, against torch's.
        got = run_declared(HostRunner(), dist / a["file"], a["format"], inputs, input_names=INPUT_NAMES,
                           output_names=OUTPUT_NAMES, warmup=0, iterations=1, threads=1).outputs
        score, ref = got[1].astype(np.float64), expected[1].astype(np.float64)
        within = float(np.mean(np.abs(score - ref) <= 0.15 + 0.1 * np.abs(ref)))
        assert a["outputs"]["score"]["within_tolerance"] == pytest.approx(within, abs=1e-6), a["file"]
        assert 0.9 <= within, (a["file"], within)
        assert a["outputs"]["score"]["max_abs_error"] == pytest.approx(float(np.abs(score - ref).max()), abs=1e-5)
        logits, ref_logits = got[0].astype(np.float64), expected[0].astype(np.float64)
        snr = 10 * np.log10(np.sum(ref_logits**2) / np.sum((ref_logits - logits) ** 2))
        assert a["outputs"]["class_logits"]["snr_db"] == pytest.approx(snr, abs=0.01), a["file"]
        assert a["metrics"] == {"mean_score": pytest.approx(float(got[1].mean()), abs=1e-5)}
        assert a["file"].endswith(get_format(a["format"]).extension)
