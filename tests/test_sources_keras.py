"""A Keras model as the source: the Keras sample built for android and raspberry-pi, each
artifact run in its own runtime against Keras' own outputs; the formats a Keras model
cannot reach refused at plan time or skipped; loading that would run code from the file
refused; TensorFlow missing said in one line."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, cli, exact_onnx_session, load_sample_module, snr_db

pytest.importorskip("tensorflow", reason="the keras extra (pip install 'edgepack[keras]') is not installed")

SAMPLE = REPO / "samples" / "keras_digits"


def keras_outputs(path, x: np.ndarray) -> np.ndarray:
    import keras

    model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def run_tflite(path, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The .tflite's signature run one image at a time, quantizing int8 I/O by its own
    scale and zero point; also the signature's input and output names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (in_name, in_d), = runner.get_input_details().items()
    (out_name, out_d), = runner.get_output_details().items()
    outs = []
    for row in x:
        v = row[None]
        scale, zero = in_d["quantization"]
        if in_d["dtype"] == np.int8:
            v = np.clip(np.round(v / scale) + zero, -128, 127).astype(np.int8)
        o = runner(**{in_name: v})[out_name].astype(np.float32)
        scale, zero = out_d["quantization"]
        outs.append((o - zero) * scale if out_d["dtype"] == np.int8 else o)
    return np.concatenate(outs), {"input": in_name, "output": out_name}


def run_onnx(path, x: np.ndarray) -> tuple[np.ndarray, dict]:
    session = exact_onnx_session(path)
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return session.run(None, {name: x})[0], {"input": name, "output": out}


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory):
    project = tmp_path_factory.mktemp("keras") / "keras_digits"
    shutil.copytree(SAMPLE, project)
    return project


@pytest.fixture(scope="module")
def evaluation():
    x, y = load_sample_module(SAMPLE, "data").evaluation()
    return np.ascontiguousarray(x, dtype=np.float32), y


@pytest.mark.slow
def test_the_keras_sample_builds_for_android_and_raspberry_pi_and_each_artifact_matches_keras(sample_copy, evaluation):
    out = sample_copy / "dist"
    run = cli("build", "-p", sample_copy, "-o", out, "--json", "--no-latency-gate")
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["ok"] is True
    x, y = evaluation
    reference = keras_outputs(sample_copy / "digits.keras", x)
    assert float(np.mean(reference.argmax(1) == y)) >= 0.95   # the trained sample, checked by Keras itself
    for target in ("android", "raspberry-pi"):
        manifest = json.loads((out / target / "manifest.json").read_text())
        assert manifest["source"]["kind"] == "keras"
        assert manifest["toolchain"]["tensorflow-cpu"] == "2.21.0"
        # ExecuTorch cannot be built from Keras: left out, with the reason, by skip_unreachable.
        assert [(s["format"], s["precision"]) for s in manifest["skipped_artifacts"]] == [("executorch", "int8")]
        assert "cannot be built from a Keras model" in manifest["skipped_artifacts"][0]["reason"]
        assert sorted(a["format"] for a in manifest["artifacts"]) == ["onnx", "tflite"]
        for a in manifest["artifacts"]:
            path = out / target / a["file"]
            outputs, names = (run_tflite if a["format"] == "tflite" else run_onnx)(path, x)
            # The artifact carries the project's declared names, not the file's own.
            assert names == {"input": "image", "output": "logits"}, (a["file"], names)
            agreement = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
            # int8 of a small ReLU6 CNN: measured 99.8 % agreement and 37 dB in both formats.
            assert agreement >= 0.97, (a["file"], agreement)
            assert snr_db(reference, outputs) >= 25.0, (a["file"], snr_db(reference, outputs))
            # The build's own verification measured the same artifact against the same Keras outputs.
            assert abs(a["agreement"] - agreement) <= 0.005, (a["file"], a["agreement"], agreement)
            assert abs(a["snr_db"] - snr_db(reference, outputs)) <= 0.5, (a["file"], a["snr_db"])
        tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
        assert tflite["export"]["calibration"]["method"] == "minmax"
        assert tflite["export"]["tensors_by_dtype"].get("float32", 0) == 0   # full-integer


@pytest.mark.slow
def test_float_and_dynamic_range_artifacts_from_keras_match_keras(sample_copy, evaluation, tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    artifacts = "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f, p in
                        (("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8-dynamic"), ("onnx", "fp32")))
    (targets / "floats.toml").write_text(f'name = "floats"\ndevice = "pixel-7"\n{artifacts}\n[budgets]\nmax_accuracy_drop_pt = 2.0\n')
    out = tmp_path / "dist"
    run = cli("build", "-p", sample_copy, "-t", "floats", "--target-dir", targets, "-o", out, "--no-latency-gate")
    assert run.code == 0, run.stderr
    x, _ = evaluation
    reference = keras_outputs(sample_copy / "digits.keras", x)
    for name, tol in (("keras-digits-fp32.tflite", 1e-4), ("keras-digits.onnx", 1e-4)):
        outputs, _ = (run_tflite if name.endswith(".tflite") else run_onnx)(out / "floats" / name, x)
        assert np.max(np.abs(outputs - reference)) <= tol * max(1.0, float(np.max(np.abs(reference)))), name
    for name, floor in (("keras-digits-fp16.tflite", 40.0), ("keras-digits-int8-dynamic.tflite", 25.0)):
        outputs, _ = run_tflite(out / "floats" / name, x)
        assert snr_db(reference, outputs) >= floor, (name, snr_db(reference, outputs))
    manifest = json.loads((out / "floats" / "manifest.json").read_text())
    dynamic = next(a for a in manifest["artifacts"] if a["precision"] == "int8-dynamic")
    assert dynamic["export"]["per_channel_int8_weights"] > 0


def _write_project(folder, model_file: str, *, targets: str = '["onnx-only"]', extra: str = "") -> None:
    (folder / "data.py").write_text((SAMPLE / "data.py").read_text())
    (folder / "targets").mkdir(exist_ok=True)
    (folder / "targets" / "onnx-only.toml").write_text(
        'name = "onnx-only"\ndevice = "pixel-7"\n[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
        "[budgets]\nmax_accuracy_drop_pt = 100.0\nmin_agreement_pct = { int8 = 0.0 }\nmin_snr_db = { int8 = 0.0 }\n")
    (folder / "edgepack.toml").write_text(f'''
[project]
name = "k"
version = "0.1.0"
[model]
keras = "{model_file}"
input_shape = [1, 8, 8, 1]
{extra}
[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"
[build]
targets = {targets}
''')


def _save(model, path) -> None:
    model.save(str(path))


def test_a_lambda_layer_is_refused_before_keras_loads_anything(tmp_path):
    import keras

    marker = tmp_path / "ran"
    inputs = keras.Input((8, 8, 1))
    # If this lambda ever ran, the marker file would exist (its path is a constant of its code).
    touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307
    x = keras.layers.Lambda(touch)(inputs)
    _save(keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x))), tmp_path / "m.keras")
    _write_project(tmp_path, "m.keras")
    marker.unlink(missing_ok=True)   # building the model above called the lambda once
    run = cli("build", "-p", tmp_path, "--no-latency-gate")
    assert_one_line_error(run, 2, "lambda layer", "custom_objects")
    assert not marker.exists()
    assert not (tmp_path / "dist").exists()


CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="project")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def custom_objects():
    return {"project>Scale": Scale}
'''


@pytest.mark.slow
def test_a_custom_layer_needs_the_project_to_name_it_then_builds(tmp_path):
    import keras

    (tmp_path / "layers.py").write_text(CUSTOM_LAYER)
    sys.path.insert(0, str(tmp_path))
    try:
        import layers  # noqa: F401  (the class the saved config names)

        inputs = keras.Input((8, 8, 1))
        x = sys.modules["layers"].Scale(0.5)(inputs)
        _save(keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x))), tmp_path / "m.keras")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("layers", None)
    _write_project(tmp_path, "m.keras")
    run = cli("build", "-p", tmp_path, "--no-latency-gate")
    assert_one_line_error(run, 2, "project>Scale", "custom_objects")
    _write_project(tmp_path, "m.keras", extra='custom_objects = "layers.py:custom_objects"')
    run = cli("build", "-p", tmp_path, "--no-latency-gate")
    assert run.code == 0, run.stderr


def test_executorch_from_keras_fails_the_plan_and_a_compression_stage_is_refused(tmp_path):
    shutil.copy(SAMPLE / "digits.keras", tmp_path / "m.keras")
    _write_project(tmp_path, "m.keras", targets='["android"]')
    run = cli("build", "-p", tmp_path, "--dry-run")
    assert_one_line_error(run, 2, "executorch", "cannot be built from a keras model", "skip_unreachable")
    _write_project(tmp_path, "m.keras", extra='[[compress.stages]]\npass = "prune"\nmethod = "structured"\nratio = 0.3\n')
    run = cli("build", "-p", tmp_path, "--dry-run")
    assert_one_line_error(run, 2, "prune", "needs a pytorch model", "keras model")


def test_without_tensorflow_a_keras_source_says_which_extra_to_install(tmp_path):
    shutil.copy(SAMPLE / "digits.keras", tmp_path / "m.keras")
    _write_project(tmp_path, "m.keras")
    # A Python where `import tensorflow` and `import keras` fail, as without the extra.
    blocked = tmp_path / "blocked"
    for name in ("tensorflow", "keras"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-m", "edgepack", "build", "-p", str(tmp_path), "--no-latency-gate"],
                          capture_output=True, text=True, env=env, timeout=600)
    from conftest import Run

    assert_one_line_error(Run(proc.returncode, proc.stdout, proc.stderr), 2, "edgepack[keras]", "tensorflow")
    assert not (tmp_path / "dist").exists()
