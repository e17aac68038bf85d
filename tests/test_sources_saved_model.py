"""A TensorFlow SavedModel folder as the source: the Keras sample exported as a SavedModel,
built to LiteRT and ONNX (float and int8), each artifact run in its own runtime against
the SavedModel's and Keras' own outputs; a SavedModel whose graph reaches outside itself
(files, streams, Python, custom ops, assets outside the folder) refused before TensorFlow
loads it, with nothing run and nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, cli, load_sample_module, snr_db
from test_sources_keras import keras_outputs, run_onnx, run_tflite

tf = pytest.importorskip("tensorflow", reason="the keras extra (pip install 'edgepack[keras]') is not installed")

SAMPLE = REPO / "samples" / "keras_digits"


def _write_project(folder, model_dir: str = "exported", *, targets: str = '["tf-all"]', extra: str = "",
                   output: str = "logits") -> None:
    (folder / "data.py").write_text((SAMPLE / "data.py").read_text())
    (folder / "targets").mkdir(exist_ok=True)
    artifacts = "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f, p in
                        (("tflite", "fp32"), ("onnx", "fp32"), ("tflite", "int8"), ("onnx", "int8"),
                         ("executorch", "int8")))
    (folder / "targets" / "tf-all.toml").write_text(
        f'name = "tf-all"\ndevice = "pixel-7"\n{artifacts}\n[budgets]\nmax_accuracy_drop_pt = 2.0\n')
    (folder / "edgepack.toml").write_text(f'''
[project]
name = "sm"
version = "0.1.0"
[model]
saved_model = "{model_dir}"
input_shape = [1, 8, 8, 1]
input_name = "image"
output_name = "{output}"
{extra}
[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"
[build]
targets = {targets}
skip_unreachable = true
''')


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The Keras sample written as a SavedModel by Keras' own export (serving_default:
    `image` in, `output_0` out)."""
    import keras

    folder = tmp_path_factory.mktemp("saved_model")
    model = keras.saving.load_model(str(SAMPLE / "digits.keras"), safe_mode=True, compile=False)
    model.export(str(folder / "exported"), format="tf_saved_model", verbose=False)
    return folder / "exported"


@pytest.fixture(scope="module")
def evaluation():
    x, y = load_sample_module(SAMPLE, "data").evaluation()
    return np.ascontiguousarray(x, dtype=np.float32), y


def saved_model_outputs(folder, x: np.ndarray) -> np.ndarray:
    function = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return np.asarray(function(image=tf.constant(x))["output_0"])


@pytest.mark.slow
def test_a_saved_model_builds_tflite_and_onnx_that_compute_what_it_does(exported, evaluation, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(exported, project / "exported")
    _write_project(project)
    out = tmp_path / "dist"
    run = cli("build", "-p", project, "-o", out, "--json", "--no-latency-gate")
    assert run.code == 0, run.stderr
    x, _ = evaluation
    reference = saved_model_outputs(exported, x)
    # The SavedModel is the Keras sample's own computation.
    keras_reference = keras_outputs(SAMPLE / "digits.keras", x)
    assert np.max(np.abs(reference - keras_reference)) <= 1e-5 * max(1.0, float(np.max(np.abs(reference))))
    manifest = json.loads((out / "tf-all" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "saved_model"
    assert [(s["format"], s["precision"]) for s in manifest["skipped_artifacts"]] == [("executorch", "int8")]
    assert "cannot be built from a tensorflow savedmodel" in manifest["skipped_artifacts"][0]["reason"].lower()
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    assert sorted((a["format"], a["precision"]) for a in by_file.values()) == [
        ("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]
    for name, a in by_file.items():
        outputs, names = (run_tflite if a["format"] == "tflite" else run_onnx)(out / "tf-all" / name, x)
        # The declared names, not the signature's own (`output_0`).
        assert names == {"input": "image", "output": "logits"}, (name, names)
        if a["precision"] == "fp32":
            assert np.max(np.abs(outputs - reference)) <= 1e-4 * max(1.0, float(np.max(np.abs(reference)))), name
        else:
            # As from the .keras file: measured 99.8 % agreement and 37 dB in both formats.
            agreement = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
            assert agreement >= 0.97 and snr_db(reference, outputs) >= 25.0, (name, agreement, snr_db(reference, outputs))
            assert abs(a["snr_db"] - snr_db(reference, outputs)) <= 0.5, (name, a["snr_db"])
    tflite = next(a for a in by_file.values() if a["format"] == "tflite" and a["precision"] == "int8")
    assert tflite["export"]["converter"] == "tensorflow.lite.TFLiteConverter.from_concrete_functions"
    assert tflite["export"]["tensors_by_dtype"].get("float32", 0) == 0   # full-integer


def _save_module(folder, body, *, extra_function: bool = False):
    """A tf.Module whose serving signature runs `body(x)`; with `extra_function`, the
    signature is clean and a second saved function runs `body` instead."""
    spec = tf.TensorSpec([1, 8, 8, 1], tf.float32)
    w = tf.Variable(tf.ones([64, 10]))

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = w

        @tf.function(input_signature=[spec])
        def clean(self, x):
            return {"logits": tf.matmul(tf.reshape(x, [1, 64]), self.w)}

        @tf.function(input_signature=[spec])
        def dirty(self, x):
            body(x)
            return {"logits": tf.matmul(tf.reshape(x, [1, 64]), self.w)}

    m = M()
    if extra_function:
        tf.saved_model.save(m, str(folder), signatures={"serving_default": m.clean, "other": m.dirty})
    else:
        tf.saved_model.save(m, str(folder), signatures=m.dirty)


@pytest.mark.parametrize("case, fragments", [
    ("write_file", ("writefile", "reaches outside the model")),
    ("print_to_file", ("printv2", "reaches outside the model")),
    ("py_function", ("pyfunc", "reaches outside the model")),
    ("write_in_a_branch", ("writefile", "reaches outside the model")),
    ("other_signature_writes", ("writefile", "loading could run")),
])
def test_a_saved_model_reaching_outside_itself_is_refused_before_loading(tmp_path, case, fragments):
    marker = tmp_path / "ran"
    folder = tmp_path / "exported"
    if case == "write_file":
        _save_module(folder, lambda x: tf.io.write_file(str(marker), "x"))
    elif case == "print_to_file":
        _save_module(folder, lambda x: tf.print(x, output_stream=f"file://{marker}"))
    elif case == "py_function":
        _save_module(folder, lambda x: tf.py_function(lambda t: t, [x], tf.float32))
    elif case == "write_in_a_branch":
        def written():
            tf.io.write_file(str(marker), "x")
            return tf.constant(1.0)

        # The write sits in a branch function of a tf.cond, reached through the call's attributes.
        _save_module(folder, lambda x: tf.cond(tf.reduce_sum(x) > 1e9, written, lambda: tf.constant(0.0)))
    else:
        _save_module(folder, lambda x: tf.io.write_file(str(marker), "x"), extra_function=True)
    assert not marker.exists()   # saving traced the functions; nothing ran them
    _write_project(tmp_path, targets='["onnx-only"]')
    (tmp_path / "targets" / "onnx-only.toml").write_text(
        'name = "onnx-only"\ndevice = "pixel-7"\n[[artifacts]]\nformat = "onnx"\nprecision = "fp32"\n')
    run = cli("build", "-p", tmp_path, "--no-latency-gate")
    assert_one_line_error(run, 2, *fragments)
    assert not marker.exists()
    assert not (tmp_path / "dist").exists()


def _edit_proto(folder, edit) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    message = saved_model_pb2.SavedModel()
    message.ParseFromString((folder / "saved_model.pb").read_bytes())
    edit(message.meta_graphs[0])
    (folder / "saved_model.pb").write_bytes(message.SerializeToString())


def test_a_custom_op_or_an_asset_outside_the_folder_is_refused(exported, tmp_path):
    folder = tmp_path / "exported"
    shutil.copytree(exported, folder)
    _write_project(tmp_path, targets='["onnx-only"]')
    (tmp_path / "targets" / "onnx-only.toml").write_text(
        'name = "onnx-only"\ndevice = "pixel-7"\n[[artifacts]]\nformat = "onnx"\nprecision = "fp32"\n')
    clean = (folder / "saved_model.pb").read_bytes()

    def custom_op(meta):
        node = next(n for f in meta.graph_def.library.function for n in f.node_def if n.op == "Relu6")
        node.op = "VendorRelu"

    _edit_proto(folder, custom_op)
    assert_one_line_error(cli("build", "-p", tmp_path, "--no-latency-gate"), 2, "vendorrelu", "custom op")

    (folder / "saved_model.pb").write_bytes(clean)
    _edit_proto(folder, lambda meta: meta.asset_file_def.add(filename="../../etc/passwd"))
    assert_one_line_error(cli("build", "-p", tmp_path, "--no-latency-gate"), 2, "../../etc/passwd", "inside")
    assert not (tmp_path / "dist").exists()


def test_the_signature_and_interface_are_checked_in_one_line(exported, tmp_path):
    shutil.copytree(exported, tmp_path / "exported")
    _write_project(tmp_path, extra='signature = "predict"')
    assert_one_line_error(cli("build", "-p", tmp_path, "--no-latency-gate"), 2, "no signature 'predict'",
                          "serving_default")
    _write_project(tmp_path, extra="")
    text = (tmp_path / "edgepack.toml").read_text().replace("input_shape = [1, 8, 8, 1]", "input_shape = [1, 8, 8, 3]")
    (tmp_path / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", tmp_path, "--no-latency-gate"), 2, "declared [1, 8, 8, 3]", "image")
    # A folder given as model.keras is pointed at model.saved_model.
    _write_project(tmp_path)
    text = (tmp_path / "edgepack.toml").read_text().replace('saved_model = "exported"', 'keras = "exported"')
    (tmp_path / "edgepack.toml").write_text(text)
    assert_one_line_error(cli("build", "-p", tmp_path, "--no-latency-gate"), 2, "model.saved_model")
    assert not (tmp_path / "dist").exists()


def test_a_compression_stage_on_a_saved_model_fails_the_plan(exported, tmp_path):
    shutil.copytree(exported, tmp_path / "exported")
    _write_project(tmp_path, extra='[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.3\n')
    assert_one_line_error(cli("build", "-p", tmp_path, "--dry-run"), 2, "prune", "needs a pytorch model",
                          "tensorflow savedmodel")


MNV2_DATA = '''
import numpy as np
from sklearn.datasets import load_sample_images


def _crops(n, seed):
    """96x96 crops of scikit-learn's two bundled photos, scaled to [-1, 1] as MobileNetV2 takes them."""
    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = images[i % 2]
        y, x = rng.integers(0, image.shape[0] - 96), rng.integers(0, image.shape[1] - 96)
        out.append(image[y:y + 96, x:x + 96] / 127.5 - 1)
    return np.asarray(out, np.float32)


def calibration():
    return _crops(64, 1)


def evaluation():
    return _crops(48, 2)
'''


@pytest.mark.slow
def test_a_saved_model_of_mobilenet_v2_converts_exactly_in_float_and_closely_in_int8(tmp_path):
    """An architecture nobody here wrote (Keras Applications' MobileNetV2, seeded random
    weights: no download), exported by Keras as a SavedModel and built without a label."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
    model.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    _write_project(tmp_path, output="output_0")
    (tmp_path / "data.py").write_text(MNV2_DATA)
    text = (tmp_path / "edgepack.toml").read_text().replace("input_shape = [1, 8, 8, 1]", "input_shape = [1, 96, 96, 3]")
    (tmp_path / "edgepack.toml").write_text(text.replace("[data]", '[data]\ntask = "none"'))
    (tmp_path / "targets" / "tf-all.toml").write_text(
        'name = "tf-all"\ndevice = "pixel-7"\n' + "".join(
            f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f in ("tflite", "onnx") for p in ("fp32", "int8")))
    out = tmp_path / "dist"
    run = cli("build", "-p", tmp_path, "-o", out, "--no-latency-gate")
    assert run.code == 0, run.stderr
    x = load_sample_module(tmp_path, "data").evaluation()
    # The signature's own names (`keras_tensor` in): one input and one output, matched by position.
    function = tf.saved_model.load(str(tmp_path / "exported")).signatures["serving_default"]
    (key,) = function.structured_input_signature[1]
    (reference,) = [np.asarray(v) for v in function(**{key: tf.constant(x)}).values()]
    manifest = json.loads((out / "tf-all" / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == 4
    for a in manifest["artifacts"]:
        outputs, _ = (run_tflite if a["format"] == "tflite" else run_onnx)(out / "tf-all" / a["file"], x)
        if a["precision"] == "fp32":
            assert snr_db(reference, outputs) >= 80.0, (a["file"], snr_db(reference, outputs))
        else:
            # Measured 36.1 dB (tflite) and 34.1 dB (onnx) on these crops; random weights
            # spread activations less than trained ones.
            assert snr_db(reference, outputs) >= 25.0, (a["file"], snr_db(reference, outputs))
            assert abs(a["snr_db"] - snr_db(reference, outputs)) <= 0.5, (a["file"], a["snr_db"])


def test_a_two_input_two_output_signature_is_matched_by_name_whatever_its_order(tmp_path):
    """The signature's inputs come sorted by name (context, features); the project declares
    features first. Every artifact takes and returns the declared names, its manifest
    signature lists them in declared order with their own shapes, and each computes what
    the signature does."""
    from ai_edge_litert.interpreter import Interpreter

    from conftest import exact_onnx_session

    class TwoHeads(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable(tf.random.stateless_normal([16, 8], seed=[1, 2]))
            self.w2 = tf.Variable(tf.random.stateless_normal([4, 8], seed=[3, 4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="features"),
                                      tf.TensorSpec([None, 4], tf.float32, name="context")])
        def serve(self, features, context):
            h = tf.nn.relu(features @ self.w1 + context @ self.w2)
            return {"score": tf.reduce_sum(h, axis=1, keepdims=True), "embedding": h}

    module = TwoHeads()
    tf.saved_model.save(module, str(tmp_path / "exported"), signatures=module.serve)
    (tmp_path / "data.py").write_text(
        "import numpy as np\n"
        "def _x(n, seed):\n"
        "    r = np.random.default_rng(seed)\n"
        "    return {'context': r.normal(size=(n, 4)).astype(np.float32), "
        "'features': r.normal(size=(n, 16)).astype(np.float32)}\n"
        "def calibration():\n    return _x(64, 1)\n"
        "def evaluation():\n    return _x(128, 2)\n")
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "t.toml").write_text('name = "t"\ndevice = "pixel-7"\n' + "".join(
        f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f in ("tflite", "onnx") for p in ("fp32", "int8")))
    (tmp_path / "edgepack.toml").write_text('''
[project]
name = "two"
version = "0.1.0"
[model]
saved_model = "exported"
[[model.inputs]]
name = "features"
shape = [1, 16]
[[model.inputs]]
name = "context"
shape = [1, 4]
[[model.outputs]]
name = "embedding"
[[model.outputs]]
name = "score"
[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"
task = "none"
[build]
targets = ["t"]
''')
    out = tmp_path / "dist"
    run = cli("build", "-p", tmp_path, "-o", out, "--no-latency-gate")
    assert run.code == 0, run.stderr
    rng = np.random.default_rng(2)
    context, features = rng.normal(size=(128, 4)).astype(np.float32), rng.normal(size=(128, 16)).astype(np.float32)
    expected = module.serve(features=tf.constant(features), context=tf.constant(context))
    expected = {k: np.asarray(v) for k, v in expected.items()}
    manifest = json.loads((out / "t" / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == 4
    for a in manifest["artifacts"]:
        sig = a["signature"]
        assert [(i["name"], i["shape"][1]) for i in sig["inputs"]] == [("features", 16), ("context", 4)], a["file"]
        assert [o["name"] for o in sig["outputs"]] == ["embedding", "score"], a["file"]
        path = out / "t" / a["file"]
        if a["format"] == "tflite":
            runner = Interpreter(model_path=str(path)).get_signature_runner()
            ins, outs = runner.get_input_details(), runner.get_output_details()

            def q(name, v, details=ins):
                scale, zero = details[name]["quantization"]
                return np.clip(np.round(v / scale) + zero, -128, 127).astype(np.int8) if details[name]["dtype"] == np.int8 else v

            def dq(name, v):
                scale, zero = outs[name]["quantization"]
                return (v.astype(np.float32) - zero) * scale if outs[name]["dtype"] == np.int8 else v

            rows = [runner(features=q("features", features[i:i + 1]), context=q("context", context[i:i + 1]))
                    for i in range(len(features))]
            got = {k: np.concatenate([dq(k, r[k]) for r in rows]) for k in ("embedding", "score")}
        else:
            session = exact_onnx_session(path)
            got = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {"features": features, "context": context})))
        for name in ("embedding", "score"):
            floor = 80.0 if a["precision"] == "fp32" else 25.0   # int8 measured 32.9-33.0 dB
            assert snr_db(expected[name], got[name]) >= floor, (a["file"], name, snr_db(expected[name], got[name]))
