"""Speech and non-speech audio synthesised offline, for the zoo's audio models. No
installed package ships speech recordings, so speech is made the way a formant
synthesiser makes it: a glottal pulse train (fundamental 90-250 Hz with slow intonation
and jitter) through the resonances of a vowel's first three formants, syllables of
150-300 ms with consonant bursts (band-passed noise) between them, at a speaking rate
of about 4 syllables a second. Non-speech is what a detector must reject: near
silence, white and pink noise, a hum with harmonics, a chord of pure tones, a clock's
clicks. A clip is non-speech, speech, non-speech at random levels over background
noise, with a per-sample speech mask."""

from __future__ import annotations

import numpy as np

SR = 16000
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
