"""Silero VAD's weights, as the PyPI package `silero-vad` 6.2.3 ships them in its
16 kHz ONNX file, into weights/silero_vad.safetensors.

    python zoo/silero_vad/prepare.py [--package-dir DIR]

The package ships the same network several ways: a TorchScript archive (which
edgepack refuses: loading it runs code), ONNX files, and a safetensors file for its
tinygrad port. The safetensors file holds an older checkpoint than the one the
package's loaders use (its probabilities differ from the ONNX and TorchScript models'
by up to 0.1 on the same audio), so the weights are taken from
`silero_vad_16k_op15.onnx`: an ONNX file is a protobuf whose initializers are plain
tensors, read with onnx.numpy_helper (no code runs). They are renamed to model.py's
modules, loaded strictly, and the result is checked against the ONNX file itself run by
ONNX Runtime on streamed audio (probability and state within 1e-4) before it is
written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import PackagedFile, fetch, load_module, save_weights  # noqa: E402

SOURCE = PackagedFile(package="silero-vad", version="6.2.3",
                      member="silero_vad/data/silero_vad_16k_op15.onnx", sha256="7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49")
OUT = HERE / "weights" / "silero_vad.safetensors"
# ONNX initializer prefix -> model.py module (the ONNX names are those of Silero's own
# PyTorch model: reparametrised encoder convolutions, an LSTM cell, a 1x1 decoder conv).
RENAME = {
    "model.stft.forward_basis_buffer": "stft_conv.weight",
    "model.encoder.0.reparam_conv.": "conv1.",
    "model.encoder.1.reparam_conv.": "conv2.",
    "model.encoder.2.reparam_conv.": "conv3.",
    "model.encoder.3.reparam_conv.": "conv4.",
    "model.decoder.rnn.": "lstm_cell.",
    "model.decoder.decoder.2.": "final_conv.",
}
TOLERANCE = 1e-4


def state_dict_from_onnx(path: Path) -> dict:
    """model.py's state dict from the ONNX file's initializers; every one of the
    network's tensors must be claimed by RENAME (the rest are the graph's constants)."""
    import onnx
    import torch
    from onnx import numpy_helper

    state = {}
    for init in onnx.load(str(path)).graph.initializer:
        for prefix, target in RENAME.items():
            if init.name.startswith(prefix):
                state[target + init.name[len(prefix):]] = torch.from_numpy(numpy_helper.to_array(init).copy())
    return state


def check_against_onnx(model, path: Path) -> float:
    """Largest difference between model.py and the ONNX file over three streamed clips."""
    import onnxruntime as ort
    import torch

    data = load_module(HERE / "data.py", "zoo_silero_vad_data_check")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        audio, _ = data.speech.clip(rng)
        padded = np.concatenate([np.zeros(data.CONTEXT, np.float32), audio])
        state_onnx = np.zeros((2, 1, 128), np.float32)
        state = torch.zeros(1, 2, 128)
        for start in range(0, len(audio) - data.CHUNK + 1, data.CHUNK):
            chunk = padded[None, start: start + data.CONTEXT + data.CHUNK]
            prob_onnx, state_onnx = session.run(None, {"input": chunk, "state": state_onnx, "sr": np.array(16000, np.int64)})
            with torch.no_grad():
                prob, state = model(torch.from_numpy(chunk), state)
            worst = max(worst, float(np.abs(prob.numpy() - prob_onnx).max()),
                        float(np.abs(state.numpy().transpose(1, 0, 2) - state_onnx).max()))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    path = fetch(SOURCE, package_dir=args.package_dir)
    model = load_module(HERE / "model.py", "zoo_silero_vad_model").build_model()
    model.load_state_dict(state_dict_from_onnx(path), strict=True)
    model.eval()
    worst = check_against_onnx(model, path)
    if worst > TOLERANCE:
        raise SystemExit(f"error: model.py differs from {SOURCE.member} by {worst:.2e} (more than {TOLERANCE:g})")
    save_weights(model, OUT, source=f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}", source_sha256=SOURCE.sha256,
                 extra={"max_abs_diff_vs_onnx": f"{worst:.2e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
