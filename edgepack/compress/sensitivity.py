"""Which layers lose most to int8: quantize one layer at a time.

Each layer is made int8 alone (its weights and the tensors it quantizes, everything else
float) on the switchable fake-quantized model (compress.switchable_int8), and the model's
final outputs are compared with the float model's. A layer's SNR then measures its own
quantization noise at the output, without the noise of the layers around it; the
lowest SNR is the layer that loses most, and the first one worth keeping in float.

Per-layer output SNR inside the fully quantized model (torchao's numeric debugger) would
rank layers by the noise accumulated up to them, so every late layer looks bad; one layer
at a time separates the layers' own contributions, which add up roughly in noise power.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

METHOD = "one layer at a time: only that layer int8 (PT2E XNNPACKQuantizer, fake-quantized in torch), output SNR vs fp32"


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    snr_db: float | None         # None: that layer's int8 leaves the outputs bit-identical
    agreement: float
    weights: int
    macs: int


@dataclass(frozen=True)
class Sensitivity:
    layers: tuple[LayerSensitivity, ...]    # most sensitive (lowest SNR) first
    samples: int
    int8_snr_db: float | None               # every layer int8 at once, on the same samples
    int8_agreement: float
    seconds: float

    def ranking(self) -> tuple[str, ...]:
        return tuple(s.layer for s in self.layers)

    def as_dict(self, top: int = 10) -> dict:
        return {"method": METHOD, "samples": self.samples, "layers_measured": len(self.layers),
                "int8_snr_db": _round(self.int8_snr_db), "int8_agreement": round(self.int8_agreement, 6),
                "seconds": round(self.seconds, 2),
                "layers": [{"layer": s.layer, "snr_db": _round(s.snr_db), "agreement": round(s.agreement, 6),
                            "weights": s.weights, "macs": s.macs} for s in self.layers[:top]]}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _parity(reference: np.ndarray, output: np.ndarray) -> tuple[float | None, float]:
    from edgepack.verify.metrics import snr_db

    snr = snr_db(reference, output)
    agreement = float(np.mean(output.reshape(len(output), -1).argmax(1) == reference.reshape(len(reference), -1).argmax(1)))
    return (None if math.isinf(snr) and snr > 0 else snr), agreement


def analyse(switchable, x: np.ndarray, reference: np.ndarray, progress=None) -> Sensitivity:
    """Every layer of `switchable` int8 alone on inputs `x`, against `reference` (the float
    model's outputs on `x`). Leaves every layer int8 afterwards."""
    started = time.perf_counter()
    rows = []
    for i, layer in enumerate(switchable.layers):
        if progress and i % 10 == 0:
            progress(f"int8 sensitivity: layer {i + 1} of {len(switchable.layers)} ({layer.name})")
        switchable.set_int8_only([layer.name])
        snr, agreement = _parity(reference, switchable.predict(x))
        rows.append(LayerSensitivity(layer=layer.name, snr_db=snr, agreement=agreement, weights=layer.weights,
                                     macs=layer.macs))
    switchable.set_float(())
    snr, agreement = _parity(reference, switchable.predict(x))
    rows.sort(key=lambda r: math.inf if r.snr_db is None else r.snr_db)
    return Sensitivity(layers=tuple(rows), samples=int(len(x)), int8_snr_db=snr, int8_agreement=agreement,
                       seconds=time.perf_counter() - started)
