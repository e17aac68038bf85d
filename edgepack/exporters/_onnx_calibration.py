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


def calibration_cache(pre: Path, batches, *, method: str, percentile: float, symmetric: bool, folder: Path):
    """(path of a calibration cache for quantize_static, the CalibrationMethod it holds)."""
    from onnxruntime.quantization import save_tensors_data

    if method == "mse":
        ranges = _mse_ranges(pre, batches, symmetric=symmetric)
    else:
        ranges = _onnxruntime_ranges(pre, batches, method=method, percentile=percentile, symmetric=symmetric, folder=folder)
    path = folder / "ranges.json"
    save_tensors_data(ranges, path)
    return path, ranges.calibration_method


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


def _mse_ranges(pre: Path, batches, *, symmetric: bool):
    """Each calibrated tensor's range from torchao's HistogramObserver, read back from the
    scale and zero point it chooses for int8."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationMethod, MinMaxCalibrater, TensorData, TensorsData
    from torchao.quantization.pt2e.observer import HistogramObserver

    with tempfile.TemporaryDirectory() as tmp:
        selector = MinMaxCalibrater(pre, augmented_model_path=str(Path(tmp) / "unused.onnx"))
        model = onnx.load_model(str(pre))
        tensors, value_infos = selector.select_tensors_to_calibrate(model)
        names = sorted(tensors)
        outputs = {o.name for o in model.graph.output}
        inputs = {i.name for i in model.graph.input}
        model.graph.output.extend(value_infos[n] for n in names if n not in outputs and n not in inputs)
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save_model(model, str(augmented))
        session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
    computed = [n for n in names if n not in inputs]
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    observers = {n: HistogramObserver(dtype=torch.qint8, qscheme=qscheme, quant_min=-128, quant_max=127, eps=2**-12)
                 for n in names}
    for batch in batches:
        values = {**dict(zip(computed, session.run(computed, batch))), **{n: batch[n] for n in names if n in inputs}}
        for name, value in values.items():
            observers[name](torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    ranges = {}
    for name, obs in observers.items():
        scale, zero = (float(t.reshape(-1)[0]) for t in obs.calculate_qparams())
        ranges[name] = TensorData(lowest=np.float32((-128 - zero) * scale), highest=np.float32((127 - zero) * scale))
    return TensorsData(CalibrationMethod.MinMax, ranges)


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
