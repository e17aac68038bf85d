"""Activation ranges tuned on the model's outputs, carried to every format's calibration.

The quantize stage's `tune_ranges` (compress.range_tuning) decides, on the fake-quantized
torch model, that some activation tensors quantize better with their calibrated range
scaled by a factor (narrower, mostly: a residual stream whose rare large values are
clamped by a ReLU6 further on). Each format calibrates its own graph (litert-torch's and
torchao's PT2E graphs, onnxruntime's ONNX graph), whose tensors have names of their own,
so a tuned tensor is found again by what it holds on the calibration data: its elements
per sample and its observed minimum, maximum and mean. A tensor computing the same
function of the same inputs has these within float rounding in every format; two
different tensors of one model practically never agree on all four.

No library carries a range decision across PT2E and onnxruntime calibration: torchao's
observers and onnxruntime's calibrators each choose ranges from their own data only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Relative tolerance, as a share of the tensor's observed span, within which two
# fingerprints are one tensor (float rounding differs across runtimes and BatchNorm folding).
MATCH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Fingerprint:
    per_sample: int      # elements per sample (the batch dimension left out)
    lo: float            # smallest value observed on the calibration data
    hi: float            # largest value observed
    mean: float

    def distance(self, other: "Fingerprint") -> float | None:
        """How far apart, in units of the span; None when not the same tensor."""
        if self.per_sample != other.per_sample:
            return None
        span = max(self.hi - self.lo, other.hi - other.lo, 1e-12)
        d = max(abs(self.lo - other.lo), abs(self.hi - other.hi), abs(self.mean - other.mean)) / span
        return d if d <= MATCH_TOLERANCE else None


def as_entries(tuned: dict) -> tuple[tuple[float, ...], ...]:
    """{Fingerprint: factor} as the quantize options carry it (plain numbers, canonical order)."""
    return tuple(sorted((float(fp.per_sample), fp.lo, fp.hi, fp.mean, float(f)) for fp, f in tuned.items()))


def factor_for(entries, fp: Fingerprint) -> float | None:
    """The factor of the tuned tensor `fp` is, or None."""
    best, best_d = None, None
    for per_sample, lo, hi, mean, factor in entries:
        d = fp.distance(Fingerprint(int(per_sample), lo, hi, mean))
        if d is not None and (best_d is None or d < best_d):
            best, best_d = factor, d
    return best


def scaled_range(lo: float, hi: float, factor: float) -> tuple[float, float]:
    """A range scaled towards zero by `factor` (its zero point stays where it was)."""
    return lo * factor, hi * factor


class FingerprintStats:
    """A tensor's fingerprint accumulated over calibration batches."""

    def __init__(self):
        self.total, self.count, self.per_sample = 0.0, 0, 0
        self.lo, self.hi = float("inf"), float("-inf")

    def add(self, x: np.ndarray) -> None:
        """One batch, batch dimension first."""
        if not x.size:
            return
        self.total += float(x.sum(dtype=np.float64))
        self.count += int(x.size)
        self.per_sample = int(x[0].size) if x.ndim > 0 else 1
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def fingerprint(self) -> Fingerprint | None:
        return Fingerprint(self.per_sample, self.lo, self.hi, self.total / self.count) if self.count else None


def fingerprinting(kind):
    """An observer class of `kind` that also records the tensor's fingerprint and, given
    `tuned` entries (as_entries), scales the range it chooses for a tuned tensor."""
    class Fingerprinted(kind):
        def __init__(self, *args, tuned=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.tuned = tuple(tuned)
            self.stats = FingerprintStats()

        def forward(self, x_orig):
            self.stats.add(x_orig.detach().cpu().numpy())   # a view, no copy
            return super().forward(x_orig)

        def fingerprint(self) -> Fingerprint | None:
            return self.stats.fingerprint()

        def calculate_qparams(self):
            scale, zero = super().calculate_qparams()
            fp = self.fingerprint()
            factor = factor_for(self.tuned, fp) if fp is not None and self.tuned else None
            if factor is None or factor == 1.0 or scale.numel() != 1:
                return scale, zero
            s, z = float(scale.reshape(-1)[0]), float(zero.reshape(-1)[0])
            lo, hi = scaled_range((self.quant_min - z) * s, (self.quant_max - z) * s, factor)
            return self._calculate_qparams(scale.new_tensor(lo), scale.new_tensor(hi))

    Fingerprinted.__name__ = f"Fingerprinted{kind.__name__}"
    return Fingerprinted


def applied(module) -> dict:
    """How many tuned tensors the observers of a prepared, calibrated PT2E graph match."""
    observers = [m for m in module.modules() if hasattr(m, "fingerprint") and getattr(m, "tuned", ())]
    if not observers:
        return {}
    matched = sum(1 for m in observers if (fp := m.fingerprint()) is not None and factor_for(m.tuned, fp) is not None)
    return {"tuned_tensors": len(observers[0].tuned), "observers_matched": matched}
