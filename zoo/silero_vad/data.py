"""Data hooks for Silero VAD: 16 kHz audio synthesised offline, in 32 ms chunks with the
LSTM state the model itself carries into each chunk.

No installed package ships speech recordings, so speech is made the way a formant
synthesiser makes it: a glottal pulse train (fundamental 90-250 Hz with slow intonation
and jitter) through the resonances of a vowel's first three formants, syllables of
150-300 ms with consonant bursts (band-passed noise) between them, at a speaking
rate of about 4 syllables a second. Non-speech is what a detector must reject: silence
with room noise, white and pink noise, a hum with harmonics, a chord of pure tones,
clicks. Each clip is a few seconds of non-speech, speech, non-speech, at random levels
over background noise.

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
from packages import load_module  # noqa: E402

SR = 16000
CONTEXT = 64
CHUNK = 512
WEIGHTS = HERE / "weights" / "silero_vad.safetensors"
# First three formants (Hz) of five vowels (Peterson & Barney, 1952, averaged over speakers).
VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bandwidth / SR)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / SR), r * r]
    return lfilter([1.0 - r], a, x)


def _bandpass_noise(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import butter, sosfilt

    return sosfilt(butter(4, [lo, hi], btype="band", fs=SR, output="sos"), rng.normal(size=n))


def speech(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    out = np.zeros(n)
    pos = 0
    f0 = rng.uniform(90, 250)
    while pos < n:
        length = int(rng.uniform(0.15, 0.3) * SR)
        t = np.arange(length) / SR
        pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)) * (1 + 0.01 * rng.normal(size=length))
        phase = np.cumsum(pitch / SR)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        glottal = np.convolve(pulses, np.exp(-np.arange(80) / 12.0))[:length]
        vowel = VOWELS[rng.integers(len(VOWELS))]
        voiced = sum(_resonator(glottal, f, 60 + 0.05 * f) / (i + 1) for i, f in enumerate(vowel))
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.6
        syllable = voiced * envelope
        burst = int(rng.uniform(0.02, 0.08) * SR)
        syllable[:burst] += 0.3 * _bandpass_noise(burst, 2500, 7000, rng) * np.hanning(burst)
        syllable /= np.abs(syllable).max() + 1e-9
        end = min(n, pos + length)
        out[pos:end] += syllable[: end - pos]
        pos = end + int(rng.uniform(0.0, 0.08) * SR)
    return out


def non_speech(kind: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    if kind == 0:  # near silence
        return 0.01 * rng.normal(size=n)
    if kind == 1:  # white noise
        return rng.normal(size=n) * 0.3
    if kind == 2:  # pink noise
        spectrum = np.fft.rfft(rng.normal(size=n)) / np.sqrt(np.arange(n // 2 + 1) + 1)
        x = np.fft.irfft(spectrum, n)
        return x / np.abs(x).max()
    if kind == 3:  # mains hum with harmonics
        return sum(np.sin(2 * np.pi * 50 * h * t) / h for h in range(1, 8)) * 0.3
    if kind == 4:  # a chord of pure tones
        return sum(np.sin(2 * np.pi * f * t) for f in (440.0, 554.4, 659.3)) / 3
    clicks = np.zeros(n)  # a clock ticking
    clicks[:: SR // 2] = 1.0
    return np.convolve(clicks, np.exp(-np.arange(200) / 20.0))[:n]


def clip(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A few seconds of audio and a per-sample speech mask."""
    parts, mask = [], []
    for is_speech, seconds in ((False, rng.uniform(0.5, 1.5)), (True, rng.uniform(1.0, 2.5)), (False, rng.uniform(0.5, 1.5))):
        x = speech(seconds, rng) if is_speech else non_speech(int(rng.integers(6)), seconds, rng)
        level = rng.uniform(0.1, 0.6) if is_speech else rng.uniform(0.05, 0.4)
        parts.append(level * x / (np.abs(x).max() + 1e-9))
        mask.append(np.full(len(x), is_speech))
    audio = np.concatenate(parts)
    audio += rng.uniform(0.001, 0.01) * rng.normal(size=len(audio))
    return np.clip(audio, -1, 1).astype(np.float32), np.concatenate(mask)


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
    parts = [stream(*clip(rng)) for _ in range(clips)]
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
