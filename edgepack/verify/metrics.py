"""How close an artifact's outputs are to the reference model's, on real data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Parity:
    accuracy: float            # top-1 accuracy of the artifact on the evaluation split
    reference_accuracy: float  # the same for the fp32 reference model
    agreement: float           # share of samples whose top-1 class equals the reference's
    max_abs_error: float       # largest absolute logit difference
    snr_db: float              # 10 log10(|ref|^2 / |ref - out|^2); inf when identical
    samples: int

    @property
    def accuracy_drop_pt(self) -> float:
        return (self.reference_accuracy - self.accuracy) * 100.0

    def against(self, reference_accuracy: float) -> "Parity":
        """The same comparison with the accuracy budget measured against another model's
        accuracy (the original, when the artifact was exported from a compressed model)."""
        return replace(self, reference_accuracy=reference_accuracy)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["accuracy_drop_pt"] = self.accuracy_drop_pt
        if math.isinf(d["snr_db"]):
            d["snr_db"] = None  # JSON has no infinity; null means bit-identical outputs
        return d


def snr_db(reference: np.ndarray, output: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - output.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def output_parity(reference: np.ndarray, output: np.ndarray) -> dict:
    """How close `output` is to `reference` without labels: top-1 agreement, largest
    absolute error and SNR (None when bit-identical). What a device run is checked by."""
    if reference.shape != output.shape:
        raise ValueError(f"output shape {output.shape} differs from the reference's {reference.shape}")
    snr = snr_db(reference, output)
    return {"samples": int(len(reference)),
            "agreement": float(np.mean(output.argmax(axis=1) == reference.argmax(axis=1))),
            "max_abs_error": float(np.max(np.abs(reference.astype(np.float64) - output))),
            "snr_db": None if math.isinf(snr) else snr}


def compare(reference: np.ndarray, output: np.ndarray, labels: np.ndarray) -> Parity:
    close = output_parity(reference, output)
    return Parity(
        accuracy=float(np.mean(output.argmax(axis=1) == labels)),
        reference_accuracy=float(np.mean(reference.argmax(axis=1) == labels)),
        agreement=close["agreement"],
        max_abs_error=close["max_abs_error"],
        snr_db=snr_db(reference, output),
        samples=int(len(labels)),
    )
