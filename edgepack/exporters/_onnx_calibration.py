"""Activation ranges for onnxruntime's static int8 quantization, one way per calibration
method of the quantize stage.

- minmax: quantize_static's own CalibrationMethod.MinMax (nothing here).
- percentile, entropy: onnxruntime's own calibrators (CalibrationMethod.Percentile and
  .Entropy through `create_calibrator`), fed one batch at a time so memory stays flat.
  `create_calibrator` is called directly rather than through quantize_static because
  quantize_static passes no histogram size to them: its Entropy calibrator then searches
  128 bins for a 128-level range, and the only candidate is the whole range.
- mse: onnxruntime has no such calibrator. Every tensor onnxruntime would calibrate is
  fed to torchao's HistogramObserver, whose range search minimises the L2 quantization
  error: the same observer the PT2E formats use for this method.

With tuned ranges (the quantize stage's `tune_ranges`), each calibrated tensor's
fingerprint (exporters._tuned_ranges) is taken on the same batches, and the ranges of the
tensors the tuning chose are scaled by its factors, whatever the method (minmax then
goes through the cache too, with the observed extremes as its ranges).

The ranges reach quantize_static through its public calibration cache
(`save_tensors_data` / `calibration_cache_path`), so the quantizer itself is unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

# Histogram bins of onnxruntime's Percentile and Entropy calibrators, and the quantized
# bins the Entropy search compares against (int8's 255 levels, rounded up to odd so the
# range stays centred on zero).
NUM_BINS = 2048
NUM_QUANTIZED_BINS = 255


def calibration_cache(pre: Path, batches, *, method: str, percentile: float, symmetric: bool, folder: Path,
                      tuned=()):
    """(path of a calibration cache for quantize_static, the CalibrationMethod it holds,
    how many tensors the tuned ranges matched: {} without tuned ranges)."""
    from onnxruntime.quantization import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    prints: dict = {}
    if method == "mse":
        ranges, prints = _mse_ranges(pre, batches, symmetric=symmetric, fingerprints=bool(tuned))
    elif method == "minmax":   # only with tuned ranges: quantize_static calibrates MinMax itself otherwise
        prints = _fingerprints(pre, batches)
        ranges = TensorsData(CalibrationMethod.MinMax, {n: TensorData(**_extremes(fp, symmetric)) for n, fp in prints.items()})
    else:
        ranges = _onnxruntime_ranges(pre, batches, method=method, percentile=percentile, symmetric=symmetric, folder=folder)
        prints = _fingerprints(pre, batches) if tuned else {}
    matched = _scale_tuned(ranges, prints, tuned) if tuned else {}
    path = folder / "ranges.json"
    save_tensors_data(ranges, path)
    return path, ranges.calibration_method, matched


def _extremes(fp, symmetric: bool) -> dict:
    lo, hi = min(fp.lo, 0.0), max(fp.hi, 0.0)
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    return {"lowest": np.float32(lo), "highest": np.float32(hi)}


def _scale_tuned(ranges, prints: dict, tuned) -> dict:
    """Scale the ranges of the tensors whose fingerprint a tuned entry matches."""
    from onnxruntime.quantization import TensorData

    from edgepack.exporters._tuned_ranges import factor_for, scaled_range

    matched = 0
    for name, fp in prints.items():
        factor = factor_for(tuned, fp) if name in ranges else None
        if factor is None:
            continue
        lo, hi = (float(v) for v in ranges[name].range_value)
        lo, hi = scaled_range(lo, hi, factor)
        ranges[name] = TensorData(lowest=np.float32(lo), highest=np.float32(hi))
        matched += 1
    return {"tuned_tensors": len(tuned), "tensors_matched": matched}


def _augmented(pre: Path, tmp: Path):
    """An onnxruntime session on `pre` whose outputs include every tensor onnxruntime
    would calibrate: (session, the computed tensors' names, every calibrated name, graph inputs)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import MinMaxCalibrater

    selector = MinMaxCalibrater(pre, augmented_model_path=str(tmp / "unused.onnx"))
    model = onnx.load_model(str(pre))
    tensors, value_infos = selector.select_tensors_to_calibrate(model)
    names = sorted(tensors)
    outputs = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    model.graph.output.extend(value_infos[n] for n in names if n not in outputs and n not in inputs)
    augmented = tmp / "augmented.onnx"
    onnx.save_model(model, str(augmented))
    session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
    return session, [n for n in names if n not in inputs], names, inputs


def _each_batch(pre: Path, batches):
    """{tensor name: value} of every calibrated tensor, one batch at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        session, computed, names, inputs = _augmented(pre, Path(tmp))
        for batch in batches:
            yield {**dict(zip(computed, session.run(computed, batch))), **{n: batch[n] for n in names if n in inputs}}


def _fingerprints(pre: Path, batches) -> dict:
    from edgepack.exporters._tuned_ranges import FingerprintStats

    stats: dict = {}
    for values in _each_batch(pre, batches):
        for name, value in values.items():
            stats.setdefault(name, FingerprintStats()).add(np.asarray(value, dtype=np.float32))
    return {n: fp for n, st in stats.items() if (fp := st.fingerprint()) is not None}


def _onnxruntime_ranges(pre: Path, batches, *, method: str, percentile: float, symmetric: bool, folder: Path):
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    class One(CalibrationDataReader):
        def __init__(self, batch: dict):
            self.items = [batch]

        def get_next(self):
            return self.items.pop() if self.items else None

    kind = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
    options = {"num_bins": NUM_BINS, "symmetric": symmetric}
    if method == "percentile":
        options["percentile"] = percentile
    else:
        options["num_quantized_bins"] = NUM_QUANTIZED_BINS
    calibrator = create_calibrator(pre, None, augmented_model_path=str(folder / "augmented.onnx"),
                                   calibrate_method=kind, extra_options=options)
    for batch in batches:
        calibrator.collect_data(One(batch))
    return calibrator.compute_data()


def _mse_ranges(pre: Path, batches, *, symmetric: bool, fingerprints: bool = False):
    """Each calibrated tensor's range from torchao's HistogramObserver, read back from the
    scale and zero point it chooses for int8; and with `fingerprints`, each tensor's
    fingerprint, taken in the same pass ({} without)."""
    import torch
    from onnxruntime.quantization import CalibrationMethod, TensorData, TensorsData
    from torchao.quantization.pt2e.observer import HistogramObserver

    from edgepack.exporters._tuned_ranges import fingerprinting

    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    # Fingerprinted observers record fingerprints and scale nothing (no tuned entries given).
    kind = fingerprinting(HistogramObserver) if fingerprints else HistogramObserver
    observers: dict = {}
    for values in _each_batch(pre, batches):
        for name, value in values.items():
            if name not in observers:
                observers[name] = kind(dtype=torch.qint8, qscheme=qscheme, quant_min=-128, quant_max=127, eps=2**-12)
            observers[name](torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    ranges = {}
    for name, obs in observers.items():
        scale, zero = (float(t.reshape(-1)[0]) for t in obs.calculate_qparams())
        ranges[name] = TensorData(lowest=np.float32((-128 - zero) * scale), highest=np.float32((127 - zero) * scale))
    prints = {n: fp for n, obs in observers.items() if fingerprints and (fp := obs.fingerprint()) is not None}
    return TensorsData(CalibrationMethod.MinMax, ranges), prints


def describe(method: str, percentile: float) -> dict:
    """What the manifest records of how the activations were calibrated."""
    names = {"minmax": "onnxruntime CalibrationMethod.MinMax",
             "percentile": f"onnxruntime CalibrationMethod.Percentile ({NUM_BINS} bins)",
             "entropy": f"onnxruntime CalibrationMethod.Entropy ({NUM_BINS} bins, {NUM_QUANTIZED_BINS} quantized)",
             "mse": "torchao HistogramObserver (L2 range search) on onnxruntime's tensors"}
    out = {"method": method, "implementation": names[method]}
    if method == "percentile":
        out["percentile"] = percentile
    return out
