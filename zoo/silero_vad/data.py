"""Data hooks for Silero VAD: 16 kHz audio synthesised offline (zoo/speech.py: formant
speech between stretches of noise, hum, tones or clicks), in 32 ms chunks with the LSTM
state the model itself carries into each chunk.

Each clip is streamed through the fp32 model chunk by chunk (as the package streams
it: 64 samples of context, then 512 new ones), so every input is a pair (chunk, the
state the model had at that point). Labels are the ground truth of the synthesis:
1.0 where more than half a chunk's new samples are speech, else 0.0."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import speech  # noqa: E402
from packages import load_module  # noqa: E402

CONTEXT = 64
CHUNK = 512
WEIGHTS = HERE / "weights" / "silero_vad.safetensors"


@lru_cache(maxsize=1)
def _fp32_model():
    from safetensors.torch import load_file

    model = load_module(HERE / "model.py", "zoo_silero_vad_model").build_model()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return model.eval()


def stream(audio: np.ndarray, mask: np.ndarray):
    """(chunks N x 576, states N x 2 x 128, labels N, fp32 probabilities N)."""
    import torch

    model = _fp32_model()
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), audio])
    chunks, states, labels, probs = [], [], [], []
    state = torch.zeros(1, 2, 128)
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        chunk = padded[start: start + CONTEXT + CHUNK]
        chunks.append(chunk)
        states.append(state[0].numpy().copy())
        labels.append(float(mask[start: start + CHUNK].mean() > 0.5))
        with torch.no_grad():
            p, state = model(torch.from_numpy(chunk[None]), state)
        probs.append(float(p))
    return np.stack(chunks), np.stack(states), np.array(labels, np.float32), np.array(probs, np.float32)


@lru_cache(maxsize=2)
def _split(clips: int, seed: int):
    rng = np.random.default_rng(seed)
    parts = [stream(*speech.clip(rng)) for _ in range(clips)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def _hook(clips: int, seed: int):
    audio, state, labels, _ = _split(clips, seed)
    return {"audio": audio.copy(), "state": state.copy()}, labels.copy()


def evaluation():
    """8 clips (about 900 chunks of 32 ms), each its own random voice and noise."""
    return _hook(8, 1)


def calibration():
    """6 other clips."""
    return _hook(6, 2)
