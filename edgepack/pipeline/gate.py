"""Step `gate`: a target's budgets against its artifacts' records. Accuracy and size
are gated on the build's own verification; latency on device estimates only (host wall
time is not the device's latency)."""

from __future__ import annotations

from edgepack.pipeline.records import ArtifactRecord, FailedArtifact, Verdict


def accuracy_and_size(budgets, rec: ArtifactRecord) -> list[str]:
    failures = []
    p = rec.parity
    if p.accuracy_drop_pt > budgets.max_accuracy_drop_pt:
        failures.append(
            f"{rec.file} ({rec.format} {rec.precision}): accuracy {p.accuracy * 100:.2f}% vs reference "
            f"{p.reference_accuracy * 100:.2f}%: drop {p.accuracy_drop_pt:.2f} pt exceeds the budget of "
            f"{budgets.max_accuracy_drop_pt:g} pt"
        )
    size = rec.artifact.size_bytes
    if budgets.max_size_bytes is not None and size > budgets.max_size_bytes:
        failures.append(f"{rec.file}: size {size:,} bytes exceeds the budget of {budgets.max_size_bytes:,} bytes")
    return failures


def device_divergence(rec: ArtifactRecord) -> list[str]:
    """A device run whose outputs differ from the build host's recorded ones by more than
    the release tolerance (two output quantization steps for int8, float rounding for
    fp32): the device's kernels are the authority, so the artifact fails."""
    from edgepack.release.manifest import artifact_signature, tolerance

    failures, atol = [], None
    for m in rec.measurements:
        diff = m.parity.max_abs_diff_vs_build_host if m.method == "emulated" and m.parity else None
        if diff is None:
            continue
        if atol is None:
            signature = artifact_signature(rec.artifact.path, rec.format, rec.artifact.details)
            atol = tolerance(signature, rec.precision, rec.verified.recorded)
        if diff > atol:
            failures.append(f"{rec.file} on {m.device} (emulated {m.cpu}): outputs differ from the build host's by "
                            f"{diff:.4g}, more than the tolerance of {atol:.4g}; the device's kernels compute "
                            f"another model than the one verified")
    return failures


def gate(target_plan, records: list[ArtifactRecord], failed: list[FailedArtifact] = ()) -> Verdict:
    from edgepack.devices.latency import latency_gate

    budgets, device = target_plan.target.budgets, target_plan.device
    failures = [f"{f.file} ({f.format} {f.precision}) was not built: {f.error}" for f in failed]
    failures += [f for r in records for f in accuracy_and_size(budgets, r)]
    failures += [f for r in records for f in device_divergence(r)]
    estimates = {r.file: r.estimate() for r in records}
    for r in records:
        estimate = estimates[r.file]
        failures += latency_gate(r.file, device, estimate.to_json() if estimate else None, budgets.max_latency_ms)
    if budgets.max_latency_ms is None:
        note = "no latency budget"
    elif all(estimates.values()):
        note = f"gated on estimates for {device.name} (instructions counted on {device.qemu_cpu})"
    else:
        note = (f"not gated: host latency is not {device.name} latency; build with --runner qemu "
                f"(or run edgepack profile) to estimate it")
    return Verdict(failures=tuple(failures), latency_note=note, incomplete=bool(failed))
