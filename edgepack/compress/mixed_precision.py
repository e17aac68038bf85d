"""`keep_float = "auto"`: the fewest layers kept in float for int8 to meet its budget.

Layers are added in the order of their sensitivity (compress.sensitivity: lowest
one-layer-at-a-time SNR first) to the set kept in float, one per step, until the
switchable fake-quantized model (compress.switchable_int8) meets the int8 agreement and
SNR floors on the evaluation data, or the cap on float layers is reached. Every step is
evaluated in torch, with no export; the formats are exported once, with the set found.

Each step records what it costs: the weights left in float (4 bytes each instead of 1)
and the share of the model's multiply-accumulates that then run in float.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

# fp32 weights take 4 bytes, int8 ones 1: what a layer kept in float adds to the file.
FLOAT_EXTRA_BYTES_PER_WEIGHT = 3


@dataclass(frozen=True)
class Step:
    float_layers: tuple[str, ...]
    agreement: float
    snr_db: float | None
    float_weights: int
    extra_bytes: int
    float_macs_pct: float

    def meets(self, min_agreement_pct: float, min_snr_db: float) -> bool:
        snr = math.inf if self.snr_db is None else self.snr_db
        return self.agreement * 100.0 >= min_agreement_pct and snr >= min_snr_db

    def summary(self) -> str:
        snr = "exact" if self.snr_db is None else f"{self.snr_db:.1f} dB"
        return f"{self.agreement * 100:.1f} %, {snr}, +{self.extra_bytes} bytes, {self.float_macs_pct:.1f} % of MACs in float"

    def as_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "agreement": round(self.agreement, 6),
                "snr_db": None if self.snr_db is None else round(self.snr_db, 2), "float_weights": self.float_weights,
                "extra_bytes": self.extra_bytes, "float_macs_pct": round(self.float_macs_pct, 2)}


@dataclass(frozen=True)
class Search:
    steps: tuple[Step, ...]
    met: bool
    min_agreement_pct: float
    min_snr_db: float
    max_float_layers: int
    samples: int
    seconds: float

    @property
    def keep_float(self) -> tuple[str, ...]:
        return self.steps[-1].float_layers

    def as_dict(self) -> dict:
        return {"keep_float": list(self.keep_float), "met": self.met,
                "budget": {"min_agreement_pct": self.min_agreement_pct, "min_snr_db": self.min_snr_db},
                "max_float_layers": self.max_float_layers, "samples": self.samples,
                "seconds": round(self.seconds, 2), "steps": [s.as_dict() for s in self.steps]}

    def failure(self) -> str:
        best = max(self.steps, key=lambda s: (s.agreement, -math.inf if s.snr_db is None else s.snr_db))
        snr = "exact" if best.snr_db is None else f"{best.snr_db:.1f} dB"
        return (f"keep_float = \"auto\": int8 does not reach the budget (agreement >= {self.min_agreement_pct:g} %, "
                f"SNR >= {self.min_snr_db:g} dB) with up to {self.max_float_layers} layer(s) in float; the best step "
                f"kept {len(best.float_layers)} ({', '.join(best.float_layers) or 'none'}): {best.agreement * 100:.1f} %, "
                f"{snr} on {self.samples} evaluation samples; raise max_float_layers, list the layers in keep_float, "
                "or loosen min_agreement_pct / min_snr_db for int8")


def _step(switchable, float_layers: tuple[str, ...], x: np.ndarray, reference: np.ndarray) -> Step:
    from edgepack.compress.sensitivity import _parity

    switchable.set_float(float_layers)
    snr, agreement = _parity(reference, switchable.predict(x))
    by_name = {layer.name: layer for layer in switchable.layers}
    weights = sum(by_name[n].weights for n in float_layers)
    total_macs = sum(layer.macs for layer in switchable.layers) or 1
    macs = sum(by_name[n].macs for n in float_layers)
    return Step(float_layers=float_layers, agreement=agreement, snr_db=snr, float_weights=weights,
                extra_bytes=weights * FLOAT_EXTRA_BYTES_PER_WEIGHT, float_macs_pct=100.0 * macs / total_macs)


def search(switchable, ranking: tuple[str, ...], x: np.ndarray, reference: np.ndarray, *, min_agreement_pct: float,
           min_snr_db: float, max_float_layers: int, progress=None) -> Search:
    """Steps from no layer in float, adding the next layer of `ranking` each time, until
    a step meets both floors or `max_float_layers` are in float."""
    started = time.perf_counter()
    steps = [_step(switchable, (), x, reference)]
    say = progress or (lambda msg: None)
    say(f"keep_float auto: every layer int8: {steps[0].summary()}")
    while not steps[-1].meets(min_agreement_pct, min_snr_db) and len(steps) - 1 < min(max_float_layers, len(ranking)):
        kept = tuple(ranking[: len(steps)])
        steps.append(_step(switchable, kept, x, reference))
        say(f"keep_float auto: {len(kept)} layer(s) in float (+{kept[-1]}): {steps[-1].summary()}")
    switchable.set_float(())
    return Search(steps=tuple(steps), met=steps[-1].meets(min_agreement_pct, min_snr_db),
                  min_agreement_pct=min_agreement_pct, min_snr_db=min_snr_db, max_float_layers=max_float_layers,
                  samples=int(len(x)), seconds=time.perf_counter() - started)
