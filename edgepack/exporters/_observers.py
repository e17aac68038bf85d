"""Activation observers for the PT2E quantizers (LiteRT, ExecuTorch), one per calibration
method of the quantize stage.

torchao 0.18 (`torchao.quantization.pt2e.observer`) ships MinMaxObserver and
HistogramObserver, whose range search minimises the L2 quantization error over its
histogram (the `mse` method, and what both quantizers use by default). It has no
percentile and no KL-divergence observer, so those two are written here as subclasses of
HistogramObserver: the histogram is accumulated across calibration batches exactly as
torchao does it, and only the choice of the clipping range differs.
"""

from __future__ import annotations

import numpy as np
from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

# Quantization levels of int8; the KL search compares the histogram with its copy
# rounded to this many levels.
_LEVELS = 255


class PercentileObserver(HistogramObserver):
    """The range that keeps `percentile` % of the observed values, the rest split evenly
    between the two tails (as onnxruntime's Percentile method does without symmetry)."""

    def __init__(self, *args, percentile: float = 99.99, **kwargs):
        super().__init__(*args, **kwargs)
        self.percentile = percentile

    def calculate_qparams(self):
        if self.min_val == float("inf"):
            return super().calculate_qparams()   # never observed: torchao's own default
        lo, hi = percentile_range(self.histogram.numpy(), float(self.min_val), float(self.max_val), self.percentile)
        return self._calculate_qparams(self.min_val.new_tensor(lo), self.max_val.new_tensor(hi))


class EntropyObserver(HistogramObserver):
    """The range whose 255-level quantization of the histogram is closest to the histogram
    in KL divergence (TensorRT's calibration; Migacz, GTC 2017)."""

    def calculate_qparams(self):
        if self.min_val == float("inf"):
            return super().calculate_qparams()
        lo, hi = entropy_range(self.histogram.numpy(), float(self.min_val), float(self.max_val))
        return self._calculate_qparams(self.min_val.new_tensor(lo), self.max_val.new_tensor(hi))


def percentile_range(hist: np.ndarray, lo: float, hi: float, percentile: float) -> tuple[float, float]:
    total = float(hist.sum())
    if total <= 0 or hi <= lo:
        return lo, hi
    edges = np.linspace(lo, hi, len(hist) + 1)
    cdf = np.cumsum(hist) / total
    cut = (100.0 - percentile) / 200.0
    left = edges[int(np.searchsorted(cdf, cut))]
    right = edges[min(int(np.searchsorted(cdf, 1.0 - cut)) + 1, len(hist))]
    return float(left), float(right)


def entropy_range(hist: np.ndarray, lo: float, hi: float, *, candidates: int = 128) -> tuple[float, float]:
    """Candidate ranges shrink [lo, hi] towards zero by a common factor (for a ReLU output,
    lo = 0: only the upper end moves, as in TensorRT's one-sided search). For each, the
    histogram clipped to the range (outliers added to its end bins) is compared with that
    histogram quantized to 255 levels; the range of least KL divergence wins."""
    hist = np.asarray(hist, dtype=np.float64)
    n = len(hist)
    if hist.sum() <= 0 or hi <= lo:
        return lo, hi
    width = (hi - lo) / n
    zero = int(np.clip(round(-lo / width), 0, n)) if lo < 0 else 0   # the bin edge nearest 0
    best, best_kl = (lo, hi), np.inf
    for k in range(1, candidates + 1):
        f = k / candidates
        start, stop = zero - int(round(zero * f)), zero + int(round((n - zero) * f))
        if stop - start < _LEVELS:
            continue
        inside = hist[start:stop]
        p = inside.copy()
        p[0] += hist[:start].sum()
        p[-1] += hist[stop:].sum()
        kl = _kl_to_quantized(p, inside)
        if kl < best_kl:
            best_kl, best = kl, (lo + start * width, lo + stop * width)
    return float(best[0]), float(best[1])


def _kl_to_quantized(p: np.ndarray, inside: np.ndarray) -> float:
    """KL(p || q): p is the histogram clipped to a range (outliers in its end bins), q the
    values inside the range merged into 255 equal groups of bins and spread back evenly
    over each group's non-empty bins of p. The clipped outliers are in p only: that is
    what makes too narrow a range costly."""
    group = (np.arange(len(p)) * _LEVELS) // len(p)
    filled = p > 0
    sums = np.bincount(group, weights=inside, minlength=_LEVELS)
    counts = np.bincount(group, weights=filled, minlength=_LEVELS)
    q = np.where(filled, sums[group] / np.maximum(counts[group], 1), 0.0)
    if q.sum() <= 0:
        return float("inf")
    # Bins of p that q leaves empty get a tiny mass, as TensorRT smooths, so KL stays finite.
    q = np.where(filled & (q == 0), 1e-4, q)
    pn, qn = p[filled] / p.sum(), q[filled] / q.sum()
    return float(np.sum(pn * np.log(pn / qn)))


def activation_observer(opts):
    """The observer constructor for the stage's calibration method (`opts`: QuantizeConfig).
    `eps` as the XNNPACK and LiteRT quantizers give their own observers."""
    kind = {"minmax": MinMaxObserver, "mse": HistogramObserver, "percentile": PercentileObserver,
            "entropy": EntropyObserver}[opts.calibration]
    extra = {"percentile": opts.percentile} if opts.calibration == "percentile" else {}
    if opts.tune_ranges:
        # Fingerprinted: the range-tuning search reads which tensor each observer saw, and
        # the exports scale the tuned tensors' ranges (exporters._tuned_ranges).
        from edgepack.exporters._tuned_ranges import fingerprinting

        return fingerprinting(kind).with_args(eps=2**-12, tuned=opts.tuned_ranges, **extra)
    return kind.with_args(eps=2**-12, **extra)


def with_activation_observer(config, opts):
    """A quantizer's QuantizationConfig with its activation observer replaced by the one
    of the calibration method; weights keep theirs. Dynamic configs observe nothing."""
    import dataclasses

    def swap(spec):
        if spec is None or spec.is_dynamic:
            return spec
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=activation_observer(opts))

    return dataclasses.replace(config, input_activation=swap(config.input_activation),
                               output_activation=swap(config.output_activation))


def describe(opts) -> dict:
    """What the manifest records of how the activations were calibrated."""
    names = {"minmax": "torchao MinMaxObserver", "mse": "torchao HistogramObserver (L2 range search)",
             "percentile": "PercentileObserver (torchao HistogramObserver histogram)",
             "entropy": "EntropyObserver (KL divergence on the torchao HistogramObserver histogram)"}
    out = {"method": opts.calibration, "implementation": names[opts.calibration]}
    if opts.calibration == "percentile":
        out["percentile"] = opts.percentile
    return out
