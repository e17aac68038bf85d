"""The Keras sample: fp32 and int8 per format from edgepack, beside TensorFlow's own
post-training quantization done by hand, measured side by side in one run.

    .venv/bin/python bench/keras_sources.py [--json]

Rows, every one run on the sample's 540-image test split and compared with Keras' own
fp32 outputs (top-1 agreement, logit SNR, accuracy, size, seconds to produce it):
  - edgepack: one build of a target holding tflite fp32/int8 and onnx fp32/int8;
  - edgepack from a SavedModel: the same build from the sample exported by Keras as a
    TensorFlow SavedModel folder (`model.saved_model`);
  - TensorFlow's default PTQ: `TFLiteConverter` with `optimizations = [DEFAULT]` and no
    representative dataset (dynamic-range int8), what its documentation starts with;
  - TensorFlow full-integer int8 by hand: the same converter with a 100-sample
    representative dataset drawn from the training split, int8 I/O, as its
    post-training integer quantization guide shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "keras_digits"
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from edgepack import api  # noqa: E402

TARGET = """
name = "bench-keras"
device = "pixel-7"
[budgets]
max_accuracy_drop_pt = 100.0
""" + "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f in ("tflite", "onnx") for p in ("fp32", "int8"))


def _sample_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_keras_digits_data", SAMPLE / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    i, o = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outs = []
    for row in x:
        v = row[None]
        if i["dtype"] == np.int8:
            scale, zero = i["quantization"]
            v = np.clip(np.round(v / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(i["index"], v)
        interpreter.invoke()
        out = interpreter.get_tensor(o["index"]).astype(np.float32)
        if o["dtype"] == np.int8:
            scale, zero = o["quantization"]
            out = (out - zero) * scale
        outs.append(out)
    return np.concatenate(outs)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The exact int8 kernels on x86, so a CPU without VNNI gives the device's figures too.
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def scores(reference: np.ndarray, outputs: np.ndarray, y: np.ndarray) -> dict:
    noise = np.sum((reference.astype(np.float64) - outputs) ** 2)
    return {"agreement_pct": 100 * float(np.mean(outputs.argmax(1) == reference.argmax(1))),
            "snr_db": float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30))),
            "accuracy_pct": 100 * float(np.mean(outputs.argmax(1) == y))}


def tensorflow_by_hand(model, train_x: np.ndarray, folder: Path) -> list[dict]:
    import tensorflow as tf

    from edgepack._quiet import native_output_silenced

    rows = []
    for name, full_integer in (("TensorFlow default PTQ (dynamic range)", False),
                               ("TensorFlow full-integer int8 by hand", True)):
        started = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if full_integer:
            def representative():
                for row in train_x[:100]:
                    yield [row[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        path = folder / f"tf-{'int8' if full_integer else 'dynamic'}.tflite"
        with native_output_silenced():   # the converter lists the model's variables on stdout
            path.write_bytes(converter.convert())
        rows.append({"tool": name, "format": "tflite", "precision": "int8" if full_integer else "int8-dynamic",
                     "path": path, "seconds": time.perf_counter() - started})
    return rows


def saved_model_project(model, folder: Path) -> Path:
    """The sample with its model exported by Keras as a SavedModel folder."""
    project = folder / "saved_model_project"
    project.mkdir()
    (project / "data.py").write_text((SAMPLE / "data.py").read_text())
    model.export(str(project / "exported"), format="tf_saved_model", verbose=False)
    text = (SAMPLE / "edgepack.toml").read_text()
    keras_line = next(line for line in text.splitlines() if line.startswith("keras ="))
    (project / "edgepack.toml").write_text(text.replace(keras_line, 'saved_model = "exported"'))
    return project


def edgepack_rows(project: Path, tool: str, folder: Path, reference, x, y) -> tuple[list[dict], float]:
    plan = api.make_plan(project, targets=["bench-keras"], output_dir=folder / "dist", target_dirs=[folder / "targets"],
                         reuse_exports=False, latency_gate=False)
    started = time.perf_counter()
    result = api.build(plan, progress=lambda m: print(f"  {m}", file=sys.stderr))
    seconds = time.perf_counter() - started
    rows = []
    for a in result.targets[0].manifest["artifacts"]:
        path = folder / "dist" / "bench-keras" / a["file"]
        outputs = (run_tflite if a["format"] == "tflite" else run_onnx)(path, x)
        rows.append({"tool": tool, "format": a["format"], "precision": a["precision"],
                     "bytes": path.stat().st_size, "seconds": a["timings_s"].get("export"),
                     **scores(reference, outputs, y)})
    return rows, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import keras

    data = _sample_data()
    x, y = data.evaluation()
    train_x, _ = data.training()
    model = keras.saving.load_model(str(SAMPLE / "digits.keras"), safe_mode=True, compile=False)
    reference = np.asarray(model.predict(x, batch_size=256, verbose=0))
    fp32_bytes = sum(int(np.asarray(w).size) * 4 for w in model.weights)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "targets").mkdir()
        (tmp / "targets" / "bench-keras.toml").write_text(TARGET)
        rows, build_seconds = edgepack_rows(SAMPLE, "edgepack", tmp, reference, x, y)
        saved_rows, saved_seconds = edgepack_rows(saved_model_project(model, tmp), "edgepack from SavedModel",
                                                  tmp, reference, x, y)
        rows += saved_rows
        for r in tensorflow_by_hand(model, train_x, tmp):
            path = r.pop("path")
            rows.append({**r, "bytes": path.stat().st_size, **scores(reference, run_tflite(path, x), y)})
    doc = {"sample": "samples/keras_digits", "evaluation_samples": int(len(x)),
           "keras_fp32_accuracy_pct": 100 * float(np.mean(reference.argmax(1) == y)),
           "fp32_weight_bytes": fp32_bytes, "edgepack_build_seconds": round(build_seconds, 1),
           "edgepack_saved_model_build_seconds": round(saved_seconds, 1), "rows": rows}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    table = Table(title=f"Keras digits: {len(x)} test images, Keras fp32 accuracy {doc['keras_fp32_accuracy_pct']:.2f} %")
    for col in ("tool", "format", "precision", "size", "vs fp32", "accuracy", "agreement", "SNR dB", "seconds"):
        table.add_column(col, justify="left" if col in ("tool", "format", "precision") else "right")
    for r in rows:
        table.add_row(r["tool"], r["format"], r["precision"], f"{r['bytes'] / 1024:.1f} KB", f"{r['bytes'] / fp32_bytes:.2f}x",
                      f"{r['accuracy_pct']:.2f} %", f"{r['agreement_pct']:.1f} %", f"{r['snr_db']:.1f}",
                      "-" if r["seconds"] is None else f"{r['seconds']:.1f}")
    Console(width=160).print(table)
    print(f"edgepack build (4 artifacts, verified): {build_seconds:.1f} s from the .keras file, {saved_seconds:.1f} s "
          "from the SavedModel; seconds per row: export (edgepack), conversion (TensorFlow by hand)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
