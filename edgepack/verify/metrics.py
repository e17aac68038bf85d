"""How close an artifact's outputs are to the reference model's, on real data: per
output (largest error, SNR, the share within a tolerance), and the task's scores
(edgepack/verify/tasks.py) next to the reference model's."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class OutputParity:
    """One named output of an artifact against the same output of the fp32 model."""

    max_abs_error: float
    snr_db: float                   # inf when identical
    # |out - ref| and |ref| per element, kept to count the share within any tolerance a
    # target asks for (targets sharing one verification may ask for different ones).
    abs_error: np.ndarray = field(repr=False, compare=False, default=None)
    abs_reference: np.ndarray = field(repr=False, compare=False, default=None)

    def within(self, atol: float | None, rtol: float | None) -> float:
        """Share of elements with |out - ref| <= atol + rtol * |ref| (numpy.isclose's rule)."""
        bound = (atol or 0.0) + (rtol or 0.0) * self.abs_reference
        return float(np.mean(self.abs_error <= bound))

    def as_dict(self) -> dict:
        return {"max_abs_error": round(self.max_abs_error, 6),
                "snr_db": None if math.isinf(self.snr_db) else round(self.snr_db, 2)}


@dataclass(frozen=True)
class Parity:
    accuracy: float | None            # top-1 accuracy of the artifact (classification), else None
    reference_accuracy: float | None  # the same for the reference model
    agreement: float | None           # share of samples whose top-1 class equals the reference's (classification)
    max_abs_error: float              # largest absolute difference over every output
    snr_db: float                     # the lowest output's 10 log10(|ref|^2 / |ref - out|^2); inf when identical
    samples: int
    task: str = "classification"
    metrics: dict = field(default_factory=dict)            # the artifact's scores by name (task's, then the hook's)
    reference_metrics: dict = field(default_factory=dict)  # the same scores of the reference model
    outputs: dict = field(default_factory=dict)            # output name -> OutputParity

    @property
    def accuracy_drop_pt(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return (self.reference_accuracy - self.accuracy) * 100.0

    def against(self, reference) -> "Parity":
        """The same comparison with the budgets measured against another model's scores
        (the original, when the artifact was exported from a compressed model): its
        accuracy, or its dict of metrics."""
        if isinstance(reference, dict):
            return replace(self, reference_metrics={**self.reference_metrics, **reference},
                           reference_accuracy=reference.get("accuracy", self.reference_accuracy))
        return replace(self, reference_accuracy=reference,
                       reference_metrics={**self.reference_metrics, "accuracy": reference})

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "outputs"}
        d["accuracy_drop_pt"] = self.accuracy_drop_pt
        d["outputs"] = {name: o.as_dict() for name, o in self.outputs.items()}
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
    flat_ref, flat_out = reference.reshape(len(reference), -1), output.reshape(len(output), -1)
    return {"samples": int(len(reference)),
            "agreement": float(np.mean(flat_out.argmax(axis=1) == flat_ref.argmax(axis=1))),
            "max_abs_error": float(np.max(np.abs(reference.astype(np.float64) - output))),
            "snr_db": None if math.isinf(snr) else snr}


def per_output(reference: dict[str, np.ndarray], output: dict[str, np.ndarray]) -> dict[str, OutputParity]:
    """Every named output against the reference's same output."""
    found = {}
    for name, ref in reference.items():
        if name not in output:
            raise ValueError(f"the artifact has no output {name!r}; it returned {', '.join(output)}")
        out = output[name]
        if ref.shape != out.shape:
            raise ValueError(f"output {name!r} has shape {list(out.shape)}, the reference's {list(ref.shape)}")
        err = np.abs(ref.astype(np.float64) - out.astype(np.float64))
        found[name] = OutputParity(max_abs_error=float(err.max()) if err.size else 0.0, snr_db=snr_db(ref, out),
                                   abs_error=err, abs_reference=np.abs(ref.astype(np.float64)))
    return found


def compare(reference, output, labels, *, scorer=None) -> Parity:
    """An artifact's outputs against the reference model's (arrays, or mappings by output
    name) and, through `scorer` (verify.tasks.Scorer), both scored by the task. Without a
    scorer: a classifier with one output."""
    from edgepack.verify.tasks import Scorer, as_outputs

    if scorer is None:
        scorer = Scorer(task="classification", names=("output",))
    refs, outs = as_outputs(scorer.names, reference), as_outputs(scorer.names, output)
    outputs = per_output(refs, outs)
    first_ref, first_out = next(iter(refs.values())), next(iter(outs.values()))
    metrics = scorer.score(outs, labels, reference=refs)
    reference_metrics = scorer.score(refs, labels, reference=refs)
    agreement = None
    if scorer.task == "classification":
        agreement = float(np.mean(first_out.reshape(len(first_out), -1).argmax(1)
                                  == first_ref.reshape(len(first_ref), -1).argmax(1)))
    return Parity(
        accuracy=metrics.get("accuracy"),
        reference_accuracy=reference_metrics.get("accuracy"),
        agreement=agreement,
        max_abs_error=max(o.max_abs_error for o in outputs.values()),
        snr_db=min(o.snr_db for o in outputs.values()),
        samples=int(len(first_ref)),
        task=scorer.task,
        metrics=metrics,
        reference_metrics=reference_metrics,
        outputs=outputs,
    )
