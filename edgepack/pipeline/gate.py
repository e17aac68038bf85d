"""Step `gate`: a target's budgets against its artifacts' records. Accuracy, agreement,
SNR and size are gated on the build's own verification; latency on device estimates
only (pipeline/latency_gate.py); a device run that diverges from the build host fails
its artifact.

Every check of an artifact is kept, passed or not (the manifest lists them per
artifact); a failed one is also a line of the verdict naming the artifact, the measure,
its value and the budget."""

from __future__ import annotations

import math

from edgepack.pipeline.records import ArtifactRecord, FailedArtifact, GateCheck, Verdict


def _what(rec: ArtifactRecord) -> str:
    return f"{rec.file} ({rec.format} {rec.precision})"


def parity_and_size(budgets, rec: ArtifactRecord) -> list[GateCheck]:
    """Accuracy drop (against the original model), top-1 agreement and logit SNR (against
    the fp32 model the artifact was exported from; the budget for the artifact's
    precision) and size."""
    p, precision = rec.parity, rec.precision
    checks = [GateCheck(
        budget="max_accuracy_drop_pt", value=p.accuracy_drop_pt, limit=budgets.max_accuracy_drop_pt,
        passed=p.accuracy_drop_pt <= budgets.max_accuracy_drop_pt,
        failure=(f"{_what(rec)}: accuracy {p.accuracy * 100:.2f}% vs reference {p.reference_accuracy * 100:.2f}%: "
                 f"drop {p.accuracy_drop_pt:.2f} pt exceeds the budget of {budgets.max_accuracy_drop_pt:g} pt"))]
    agreement_pct, min_agreement = p.agreement * 100.0, budgets.min_agreement_pct[precision]
    checks.append(GateCheck(
        budget="min_agreement_pct", value=agreement_pct, limit=min_agreement, passed=agreement_pct >= min_agreement,
        failure=(f"{_what(rec)}: top-1 agreement with the fp32 reference {agreement_pct:.2f}% "
                 f"({round(p.agreement * p.samples)} of {p.samples} samples) is below the {precision} budget of "
                 f"{min_agreement:g}% (min_agreement_pct)")))
    min_snr = budgets.min_snr_db[precision]
    checks.append(GateCheck(
        # Bit-identical outputs have no noise: infinite SNR, recorded as null.
        budget="min_snr_db", value=None if math.isinf(p.snr_db) and p.snr_db > 0 else p.snr_db, limit=min_snr,
        passed=p.snr_db >= min_snr,
        failure=(f"{_what(rec)}: logit SNR against the fp32 reference {p.snr_db:.1f} dB is below the {precision} "
                 f"budget of {min_snr:g} dB (min_snr_db)")))
    size = rec.artifact.size_bytes
    if budgets.max_size_bytes is not None:
        checks.append(GateCheck(
            budget="max_size_bytes", value=size, limit=budgets.max_size_bytes, passed=size <= budgets.max_size_bytes,
            failure=f"{rec.file}: size {size:,} bytes exceeds the budget of {budgets.max_size_bytes:,} bytes"))
    return checks


def accuracy_and_size(budgets, rec: ArtifactRecord) -> list[str]:
    """The failure lines of `parity_and_size`."""
    return [c.failure for c in parity_and_size(budgets, rec) if not c.passed]


def divergence_checks(rec: ArtifactRecord) -> list[GateCheck]:
    """A device run whose outputs differ from the build host's recorded ones by more than
    the release tolerance (two output quantization steps for int8, float rounding for
    fp32): the device's kernels are the authority, so the artifact fails."""
    from edgepack.release.manifest import artifact_signature, tolerance

    checks, atol = [], None
    for m in rec.measurements:
        diff = m.parity.max_abs_diff_vs_build_host if m.method == "emulated" and m.parity else None
        if diff is None:
            continue
        if atol is None:
            signature = artifact_signature(rec.artifact.path, rec.format, rec.artifact.details)
            atol = tolerance(signature, rec.precision, rec.verified.recorded)
        checks.append(GateCheck(
            budget="device_divergence", value=diff, limit=atol, passed=diff <= atol, device=m.device,
            failure=(f"{rec.file} on {m.device} (emulated {m.cpu}): outputs differ from the build host's by "
                     f"{diff:.4g}, more than the tolerance of {atol:.4g}; the device's kernels compute "
                     f"another model than the one verified")))
    return checks


def device_divergence(rec: ArtifactRecord) -> list[str]:
    """The failure lines of `divergence_checks`."""
    return [c.failure for c in divergence_checks(rec) if not c.passed]


def gate(target_plan, records: list[ArtifactRecord], failed: list[FailedArtifact] = (), *, runner: str = "host",
         latency_gate: bool = True) -> Verdict:
    from edgepack.pipeline.latency_gate import judge

    budgets, device = target_plan.target.budgets, target_plan.device
    latency = judge(device, records, budgets.max_latency_ms, runner=runner, enabled=latency_gate)
    checks = {r.file: (*parity_and_size(budgets, r), *divergence_checks(r), *latency.checks.get(r.file, ()))
              for r in records}
    failures = [f"{f.file} ({f.format} {f.precision}) was not built: {f.error}" for f in failed]
    # Grouped as a reader scans them: every artifact's parity and size, then device
    # divergence, then latency (a stable sort keeps the artifacts' order in each group).
    group = {"device_divergence": 1, "max_latency_ms": 2}
    failed_checks = [c for r in records for c in checks[r.file] if not c.passed]
    # A budget no artifact could be judged on is one line, not one per artifact.
    failures += list(dict.fromkeys(c.failure for c in sorted(failed_checks, key=lambda c: group.get(c.budget, 0))))
    return Verdict(failures=tuple(failures), latency_note=latency.note, latency_gate=latency.state,
                   incomplete=bool(failed), checks=checks)
