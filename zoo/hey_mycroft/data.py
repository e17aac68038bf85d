"""Data hooks for the "hey mycroft" classifier: its inputs are 16 consecutive speech
embeddings, computed here as openWakeWord computes them, by the package's own feature
models (copied into weights/ by prepare.py, run with ONNX Runtime): 16 kHz int16 audio
-> 32-bin log-mel spectrogram every 10 ms (scaled x/10 + 2, as openWakeWord does) ->
windows of 76 frames every 8 frames -> Google's speech embedding (96-d, every 80 ms).

The audio is zoo/speech.py's: formant-synthesised speech between stretches of noise,
hum, tones and clicks. No recording of anyone saying "hey mycroft" ships offline, so
every input is a negative (label 0.0): the model must stay quiet, and artifacts are
judged on how closely they reproduce the fp32 score. Evaluation and calibration are
different clips."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import speech  # noqa: E402

WEIGHTS = HERE / "weights"
FRAMES = 16          # embeddings per classifier input
MEL_WINDOW = 76      # mel frames per embedding
MEL_STEP = 8
STRIDE = 4           # embeddings between successive classifier inputs (320 ms)


@lru_cache(maxsize=1)
def _sessions():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return tuple(ort.InferenceSession(str(WEIGHTS / name), options, providers=["CPUExecutionProvider"])
                 for name in ("melspectrogram.onnx", "embedding_model.onnx"))


def embeddings(audio: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> E x 96."""
    mel_model, embedding_model = _sessions()
    pcm = np.round(audio * 32767).astype(np.int16).astype(np.float32)[None]
    mel = np.squeeze(mel_model.run(None, {"input": pcm})[0]) / 10 + 2
    windows = [mel[i: i + MEL_WINDOW] for i in range(0, len(mel) - MEL_WINDOW + 1, MEL_STEP)]
    batch = np.stack(windows)[..., None].astype(np.float32)
    return embedding_model.run(None, {"input_1": batch})[0].reshape(len(windows), -1)


def sequences(clips: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(clips):
        audio, _ = speech.clip(rng)
        e = embeddings(audio)
        out += [e[i: i + FRAMES] for i in range(0, len(e) - FRAMES + 1, STRIDE)]
    return np.stack(out).astype(np.float32)


@lru_cache(maxsize=2)
def _split(clips: int, seed: int) -> np.ndarray:
    return sequences(clips, seed)


def evaluation():
    """About 100 windows of 1.28 s from 16 clips; all negatives."""
    x = _split(16, 1)
    return x.copy(), np.zeros(len(x), np.float32)


def calibration():
    """About 60 windows from 12 other clips."""
    x = _split(12, 2)
    return x.copy(), np.zeros(len(x), np.float32)
