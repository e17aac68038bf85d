"""The typed records the pipeline's steps hand each other. Frozen: a step returns a new
record instead of editing the one it was given."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgepack.verify.metrics import Parity


@dataclass(frozen=True)
class Loaded:
    """What `load` returns: the source model and the data every later step reads."""

    source: object                  # sources.pytorch.SourceModel
    calibration_x: tuple            # the calibration inputs the exporters quantize with, one array per input
    evaluation: object              # sources.data.Split
    original_outputs: tuple         # the source model's outputs on the evaluation split, one array per output
    original_accuracy: float | None  # the accuracy budget is measured against this (classification)
    scorer: object = None           # verify.tasks.Scorer: the task's metrics and the project's metric hook
    original_metrics: dict = field(default_factory=dict)   # the source model's scores by name


@dataclass(frozen=True)
class Compressed:
    """What `compress` returns: the model the artifacts are exported from, its outputs on
    the evaluation split (the parity reference) and the per-stage table."""

    model: object                   # torch.nn.Module in eval mode
    reference: tuple                # `model`'s outputs on the evaluation split, one array per output
    stage_rows: tuple               # compress.engine.StageRow, the source's row first
    evaluated_on: str
    accuracy: float | None          # `model`'s accuracy on the evaluation split (classification)
    costs: object                   # devices.costs.ModelCosts of `model`
    metrics: dict = field(default_factory=dict)   # `model`'s scores on the evaluation split


@dataclass(frozen=True)
class ExportKey:
    """What makes two artifacts the same file: targets that agree on it share one export,
    one verification and one emulated run."""

    format: str
    precision: str
    dims: tuple = ()                # ((input, dim, name, min, max), ...) of the dynamic dims
    # In the key for every format: where the delegate is in the file (ExecuTorch) it
    # changes the bytes; where the runtime applies it, it changes what was verified.
    delegate: str = ""
    quantize: str = ""              # the quantize stage's options, canonical JSON; "" for float precisions


@dataclass(frozen=True)
class Verified:
    """An artifact run in its own runtime on the build host over the evaluation split."""

    parity: Parity
    latency_ms: dict                # the host run's timing row (devices.base.RunResult.latency_dict)
    recorded: tuple = field(repr=False, compare=False)   # outputs (one array per output) replayed by `edgepack verify --run`
    dynamic_checks: tuple[dict, ...] = ()
    delegate: dict | None = None    # manifest `delegate`: requested, used and how (verify.delegate_record)


class _Keyed:
    """Format and precision of a record that holds an ExportKey as `key`."""

    key: ExportKey

    @property
    def format(self) -> str:
        return self.key.format

    @property
    def precision(self) -> str:
        return self.key.precision


@dataclass(frozen=True)
class ArtifactRecord(_Keyed):
    """One artifact of one target: its export, its verification, every measurement taken
    of it (host, emulated, estimated, device), and why it may not pay off."""

    file: str
    key: ExportKey
    artifact: object                # exporters.ModelArtifact (the file in the build's workspace)
    verified: Verified
    fp32_reference_bytes: int       # the source model's fp32 weights, for the size ratio
    measurements: tuple = ()        # release.manifest_model.Measurement rows: emulated, estimated, measured
    warnings: tuple[str, ...] = ()
    seconds: dict = field(default_factory=dict, compare=False)   # wall time of export, verify, emulate in this build

    @property
    def parity(self) -> Parity:
        return self.verified.parity

    def estimate(self):
        """The latency estimate for the target's device (manifest_model.Estimated), if any."""
        return next((m for m in self.measurements if m.method == "estimated"), None)

    def manifest_entry(self, budgets=None) -> dict:
        """The manifest's `artifacts[]` row; with the target's `budgets`, each output's
        share within its declared tolerance too."""
        from edgepack.determinism import reproducible_across

        p, a = self.parity, self.artifact
        details = a.details
        return {
            "format": self.format,
            "precision": self.precision,
            "file": self.file,
            "sha256": a.sha256,
            "reproducible_across": reproducible_across(),
            "size_bytes": a.size_bytes,
            "size_vs_fp32_weights": round(a.size_bytes / self.fp32_reference_bytes, 4),
            "zipped_bytes": details.get("zipped_bytes"),
            "task": p.task,
            "accuracy": _round(p.accuracy, 6),
            "reference_accuracy": _round(p.reference_accuracy, 6),
            "accuracy_drop_pt": _round(p.accuracy_drop_pt, 4),
            "agreement": _round(p.agreement, 6),
            "metrics": {k: round(v, 6) for k, v in p.metrics.items()},
            "reference_metrics": {k: round(v, 6) for k, v in p.reference_metrics.items()},
            "max_abs_error": round(p.max_abs_error, 6),
            "snr_db": None if math.isinf(p.snr_db) else round(p.snr_db, 2),
            "outputs": {name: {**o.as_dict(), **_within(o, budgets, name)} for name, o in p.outputs.items()},
            "dynamic_check": list(self.verified.dynamic_checks),
            "evaluated_samples": p.samples,
            "latency_ms": self.verified.latency_ms,
            "export": {k: v for k, v in details.items() if k != "zipped_bytes"},
            **({"delegate": self.verified.delegate} if self.verified.delegate else {}),
            "measurements": [m.to_json() for m in self.measurements],
            "warnings": list(self.warnings),
            "timings_s": dict(self.seconds),
        }


def _round(v, digits: int):
    return None if v is None else round(v, digits)


def _within(out, budgets, name: str) -> dict:
    ob = (budgets.outputs.get(name) if budgets is not None else None)
    if ob is None or (ob.atol is None and ob.rtol is None):
        return {}
    return {"atol": ob.atol, "rtol": ob.rtol, "within_tolerance": round(out.within(ob.atol, ob.rtol), 6)}


@dataclass(frozen=True)
class FailedArtifact(_Keyed):
    """An artifact whose converter, quantizer or runtime failed: the target's other
    artifacts are still built and verified, and this one is listed with its error."""

    file: str
    key: ExportKey
    stage: str                      # export, quantize, convert, verify, run, ...
    error: str

    def manifest_entry(self) -> dict:
        return {"format": self.format, "precision": self.precision, "file": self.file, "stage": self.stage,
                "error": self.error}


@dataclass(frozen=True)
class GateCheck:
    """One budget applied to one artifact: the budget's name (as in the target's
    [budgets], or `device_divergence`), the measured value and the limit it was held to."""

    budget: str
    value: float | None             # None: an SNR of bit-identical outputs (infinite)
    limit: float
    passed: bool
    failure: str                    # the verdict's line when it did not pass
    device: str | None = None       # the device of a latency or divergence check

    def to_json(self) -> dict:
        doc = {"budget": self.budget, "value": _rounded(self.value), "limit": self.limit, "passed": self.passed}
        return {**doc, "device": self.device} if self.device else doc


def _rounded(v):
    return v if v is None or isinstance(v, int) else round(v, 6)


@dataclass(frozen=True)
class Verdict:
    """What `gate` decides for one target."""

    failures: tuple[str, ...]
    latency_note: str               # how (or whether) latency was gated
    latency_gate: str = "no_budget"  # gated, waived, no_budget or unjudged (pipeline/latency_gate.py)
    incomplete: bool = False        # an artifact failed to build: not a release, whatever the budgets say
    checks: dict = field(default_factory=dict, compare=False)   # file -> tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        return not self.failures and not self.incomplete

    @property
    def folder_suffix(self) -> str:
        """Where a target's dist goes: `<target>/` when it passed, else aside for inspection."""
        return "" if self.passed else ".incomplete" if self.incomplete else ".rejected"
