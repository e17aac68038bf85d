"""openWakeWord's "hey mycroft" classifier, as the PyPI package `openwakeword` 0.4.0
ships it (an ONNX file converted from Keras), into weights/hey_mycroft.safetensors; and
the package's two feature models (melspectrogram, Google's speech embedding), copied
as they are into weights/ for data.py to compute the classifier's inputs with.

    python zoo/hey_mycroft/prepare.py [--package-dir DIR]

All three files are checked by sha256. The weights are the ONNX file's initializers
(plain tensors in a protobuf, read with onnx.numpy_helper; no code runs): two
bidirectional ONNX LSTMs and a dense layer. ONNX stacks an LSTM's gates as input,
output, forget, cell; PyTorch as input, forget, cell, output, so each block of
weights and biases is reordered, and ONNX's one bias per direction (input then
recurrent) is split in two. The result is checked against the ONNX file run by ONNX
Runtime (within 1e-5) before it is written.

The pre-trained models of openWakeWord are licensed CC BY-NC-SA 4.0 (non-commercial),
unlike its Apache-2.0 code."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import PackagedFile, fetch, load_module, save_weights  # noqa: E402

MODELS = "openwakeword/resources/models/"
CLASSIFIER = PackagedFile(package="openwakeword", version="0.4.0", member=MODELS + "hey_mycroft_v0.1.onnx",
                          sha256="785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc")
FEATURES = (
    PackagedFile(package="openwakeword", version="0.4.0", member=MODELS + "melspectrogram.onnx",
                 sha256="ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f"),
    PackagedFile(package="openwakeword", version="0.4.0", member=MODELS + "embedding_model.onnx",
                 sha256="ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51"),
)
OUT = HERE / "weights" / "hey_mycroft.safetensors"
# The ONNX initializers of each LSTM layer (weights, recurrent weights, biases) and its width.
LSTMS = {"lstm1": ("W__200", "R__201", "B__202", 64), "lstm2": ("W__164", "R__165", "B__166", 32)}
DENSE_WEIGHT = "model/dense/MatMul/ReadVariableOp:0"
DENSE_BIAS = "model/dense/BiasAdd/ReadVariableOp:0"
ONNX_TO_TORCH_GATES = (0, 2, 3, 1)  # i, o, f, c -> i, f, c(g), o
TOLERANCE = 1e-5


def _gates(a: np.ndarray, hidden: int) -> np.ndarray:
    return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in ONNX_TO_TORCH_GATES])


def state_dict_from_onnx(path: Path) -> dict:
    import onnx
    import torch
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = {}
    for module, (w, r, b, hidden) in LSTMS.items():
        for direction, suffix in enumerate(("", "_reverse")):
            state[f"{module}.weight_ih_l0{suffix}"] = _gates(init[w][direction], hidden)
            state[f"{module}.weight_hh_l0{suffix}"] = _gates(init[r][direction], hidden)
            state[f"{module}.bias_ih_l0{suffix}"] = _gates(init[b][direction][: 4 * hidden], hidden)
            state[f"{module}.bias_hh_l0{suffix}"] = _gates(init[b][direction][4 * hidden:], hidden)
    state["dense.weight"] = init[DENSE_WEIGHT].T  # ONNX MatMul keeps Keras's in x out layout
    state["dense.bias"] = init[DENSE_BIAS]
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}


def check_against_onnx(model, path: Path) -> float:
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(0).normal(0, 3, (16, 16, 96)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_1": x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    return float(np.abs(got - expected).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    path = fetch(CLASSIFIER, package_dir=args.package_dir)
    model = load_module(HERE / "model.py", "zoo_hey_mycroft_model").build_model()
    model.load_state_dict(state_dict_from_onnx(path), strict=True)
    model.eval()
    worst = check_against_onnx(model, path)
    if worst > TOLERANCE:
        raise SystemExit(f"error: model.py differs from {CLASSIFIER.member} by {worst:.2e} (more than {TOLERANCE:g})")
    save_weights(model, OUT, source=f"{CLASSIFIER.package}=={CLASSIFIER.version}:{CLASSIFIER.member}",
                 source_sha256=CLASSIFIER.sha256, extra={"max_abs_diff_vs_onnx": f"{worst:.2e}", "license": "CC-BY-NC-SA-4.0"})
    for spec in FEATURES:
        shutil.copyfile(fetch(spec, package_dir=args.package_dir), HERE / "weights" / Path(spec.member).name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
