"""Output-aware activation ranges (quantize stage `tune_ranges`): the search on the
fake-quantized torch model, and the same ranges reaching LiteRT's, ExecuTorch's and
ONNX Runtime's own calibration through tensor fingerprints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import exact_onnx_session, snr_db


# ----------------------------------------------------------------------------- fingerprints

def test_a_fingerprint_matches_the_same_tensor_within_rounding_and_not_a_neighbour():
    from edgepack.exporters._tuned_ranges import Fingerprint, as_entries, factor_for

    relu6_a = Fingerprint(4096, 0.0, 6.0, 0.612)
    relu6_b = Fingerprint(4096, 0.0, 6.0, 0.540)     # another ReLU6 output of the same size
    entries = as_entries({relu6_a: 0.5, relu6_b: 0.7})
    # the same tensor computed by another runtime: differences at float rounding
    assert factor_for(entries, Fingerprint(4096, 1e-7, 6.0 - 2e-6, 0.612 + 3e-6)) == 0.5
    assert factor_for(entries, Fingerprint(4096, 0.0, 6.0, 0.5400004)) == 0.7
    # a different size, or a mean 1 % of the span away, is another tensor
    assert factor_for(entries, Fingerprint(2048, 0.0, 6.0, 0.612)) is None
    assert factor_for(entries, Fingerprint(4096, 0.0, 6.0, 0.672)) is None


def test_a_fingerprinted_observer_scales_only_a_tuned_tensors_range():
    from torchao.quantization.pt2e.observer import HistogramObserver

    from edgepack.exporters._tuned_ranges import as_entries, fingerprinting

    kind = fingerprinting(HistogramObserver)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 16, 10, 10)).astype(np.float32))

    def qparams(tuned=()):
        obs = kind(dtype=torch.quint8, qscheme=torch.per_tensor_affine, eps=2**-12, tuned=tuned)
        obs(x)
        return obs, tuple(float(t) for t in obs.calculate_qparams())

    plain, (scale, zero) = qparams()
    fp = plain.fingerprint()
    assert fp.per_sample == 16 * 10 * 10 and fp.lo == float(x.min()) and fp.hi == float(x.max())
    assert fp.mean == pytest.approx(float(x.double().mean()), abs=1e-9)
    _, (half_scale, half_zero) = qparams(as_entries({fp: 0.5}))
    assert half_scale == pytest.approx(scale * 0.5, rel=0.01)
    assert abs(half_zero - zero) <= 1        # the zero point stays (re-rounded)
    other = type(fp)(fp.per_sample, fp.lo, fp.hi, fp.mean + 0.1 * (fp.hi - fp.lo))
    _, untouched = qparams(as_entries({other: 0.5}))
    assert untouched == (scale, zero)


# ------------------------------------------------------------------- the search, end to end

class ClampedStream(nn.Module):
    """A residual stream one channel of which a 1x1 projection amplifies, then a 1x1
    expansion, ReLU6, a global mean and a classifier: tensors whose extremes the outputs
    barely depend on (clamped by the ReLU6, averaged by the mean), whose calibrated
    ranges are wider than the outputs need."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU6())
        self.proj = nn.Conv2d(16, 16, 1)
        self.expand = nn.Sequential(nn.Conv2d(16, 64, 1), nn.ReLU6())
        self.head = nn.Linear(64, 10)
        with torch.no_grad():    # stream channel 0 gets 15x stem channel 3 added
            self.proj.weight[0].zero_()
            self.proj.weight[0, 3] = 15.0
            self.proj.bias[0] = 0.0

    def forward(self, x):
        s = self.stem(x)
        s = s + self.proj(s)
        return self.head(self.expand(s).mean((2, 3)))


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 24, 24)).astype(np.float32)


@pytest.fixture(scope="module")
def stream():
    from edgepack.compress import switchable_int8
    from edgepack.compress.quantize_stage import QuantizeConfig

    torch.manual_seed(0)
    model = ClampedStream().eval()
    calibration = _inputs(64, 1)
    switchable = switchable_int8.build(model, calibration[:1], calibration, QuantizeConfig(tune_ranges=True))
    with torch.no_grad():
        reference = model(torch.from_numpy(calibration)).numpy()
    return model, calibration, reference, switchable


def _reset(switchable) -> None:
    for name in switchable.activations:
        switchable.scale_range(name, 1.0)


def test_tuning_keeps_the_best_range_per_tensor_and_records_it_by_fingerprint(stream):
    from edgepack.compress import range_tuning
    from edgepack.compress.quantize_stage import QuantizeConfig
    from edgepack.exporters._tuned_ranges import factor_for

    model, calibration, reference, switchable = stream
    n = range_tuning.SEARCH_SAMPLES
    untuned = snr_db(reference[:n], switchable.predict(calibration[:n]))
    try:
        tuning = range_tuning.tune(switchable, calibration, reference)
        assert tuning.snr_before_db == pytest.approx(untuned, abs=1e-6)
        assert tuning.snr_after_db == pytest.approx(snr_db(reference[:n], switchable.predict(calibration[:n])), abs=1e-6)
        assert tuning.snr_after_db >= tuning.snr_before_db
        # every tuned tensor's factor is found again from its fingerprint; every tensor was ranked
        opts = QuantizeConfig(tune_ranges=True).with_tuned_ranges(tuning.entries())
        for t in tuning.tuned:
            assert t.factor != 1.0 and factor_for(opts.tuned_ranges, t.fingerprint) == t.factor
        assert tuning.candidates == len({a[4] for a in switchable.activations.values()})
    finally:
        _reset(switchable)


def _export(fmt: str, model, calibration, opts, path: Path) -> dict:
    from edgepack.exporters import ExportRequest, export

    request = ExportRequest(module=model, example=(calibration[:1],), calibration=(calibration,), precision="int8",
                            out_path=path, input_names=("x",), output_names=("y",), parent_sha256="", quantize=opts)
    return export(fmt, request).details


def _run(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        return exact_onnx_session(path).run(None, {"x": x})[0]
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(inp["index"], x.shape)
        it.allocate_tensors()
        si, zi = inp["quantization"]
        it.set_tensor(inp["index"], np.clip(np.round(x / si) + zi, -128, 127).astype(np.int8) if si else x)
        it.invoke()
        so, zo = out["quantization"]
        y = it.get_tensor(out["index"])
        return (y.astype(np.float32) - zo) * so if so else y
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return np.concatenate([method.execute([torch.from_numpy(x[i : i + 1])])[0].numpy() for i in range(len(x))])


# Every activation's range at this factor: far enough from the calibrated ranges that a
# format which missed them computes visibly different outputs.
FORCED_FACTOR = 0.6


@pytest.mark.slow
@pytest.mark.parametrize("fmt,suffix", [("tflite", "tflite"), ("executorch", "pte"), ("onnx", "onnx")])
def test_every_format_finds_the_tuned_tensors_and_computes_what_the_tuned_fake_quantized_model_predicts(
        stream, tmp_path, fmt, suffix):
    from edgepack.compress.quantize_stage import QuantizeConfig
    from edgepack.exporters._tuned_ranges import as_entries

    model, calibration, _, switchable = stream
    untuned = switchable.predict(calibration)
    prints = {a[4] for a in switchable.activations.values()}
    opts = QuantizeConfig(tune_ranges=True).with_tuned_ranges(as_entries({fp: FORCED_FACTOR for fp in prints}))
    try:
        for name in switchable.activations:
            switchable.scale_range(name, FORCED_FACTOR)
        predicted = switchable.predict(calibration)
    finally:
        _reset(switchable)
    details = _export(fmt, model, calibration, opts, tmp_path / f"m.{suffix}")
    matched = details["range_tuning"]
    assert matched["tuned_tensors"] == len(prints)
    # Every tuned tensor is found (LiteRT and ExecuTorch observe a mean's output twice:
    # its own and the Linear's input), but for ONNX the logits: onnxruntime's QDQ Gemm
    # leaves its output float, so it calibrates no such tensor.
    found = matched.get("observers_matched", matched.get("tensors_matched"))
    assert found >= len(prints) - (1 if fmt == "onnx" else 0), matched
    got = _run(fmt, tmp_path / f"m.{suffix}", calibration)
    # The runtime computes what the fake-quantized model with the forced ranges predicts,
    # not what it predicts with the calibrated ones: the ranges reached its calibration.
    assert snr_db(predicted, got) >= snr_db(untuned, got) + 6.0, (snr_db(predicted, got), snr_db(untuned, got))
