"""Step `gate`: a target's budgets against its artifacts' records. The task's scores
(accuracy and agreement, cosine similarity, a declared metric), SNR and tolerances per
output, and size are gated on the build's own verification; latency on device estimates
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
    """The budgets of the artifact's task (verify.tasks.TASK_BUDGETS; a target's budgets
    for another task are not applied): accuracy drop (against the original model) and
    top-1 agreement for a classifier, cosine similarity for embeddings; for every task
    the SNR of each output against the fp32 model the artifact was exported from (the
    budget for the artifact's precision), the per-output tolerances, the declared gated
    metric, and size."""
    p, precision = rec.parity, rec.precision
    checks = []
    if p.task == "classification":
        checks.append(GateCheck(
            budget="max_accuracy_drop_pt", value=p.accuracy_drop_pt, limit=budgets.max_accuracy_drop_pt,
            passed=p.accuracy_drop_pt <= budgets.max_accuracy_drop_pt,
            failure=(f"{_what(rec)}: accuracy {p.accuracy * 100:.2f}% vs reference {p.reference_accuracy * 100:.2f}%: "
                     f"drop {p.accuracy_drop_pt:.2f} pt exceeds the budget of {budgets.max_accuracy_drop_pt:g} pt")))
        agreement_pct, min_agreement = p.agreement * 100.0, budgets.min_agreement_pct[precision]
        checks.append(GateCheck(
            budget="min_agreement_pct", value=agreement_pct, limit=min_agreement, passed=agreement_pct >= min_agreement,
            failure=(f"{_what(rec)}: top-1 agreement with the fp32 reference {agreement_pct:.2f}% "
                     f"({round(p.agreement * p.samples)} of {p.samples} samples) is below the {precision} budget of "
                     f"{min_agreement:g}% (min_agreement_pct)")))
    if p.task == "embedding":
        lowest, floor = p.metrics["cosine_min"], budgets.min_cosine[precision]
        checks.append(GateCheck(
            budget="min_cosine", value=lowest, limit=floor, passed=lowest >= floor,
            failure=(f"{_what(rec)}: cosine similarity to the fp32 reference's embeddings is {lowest:.4f} on its worst "
                     f"sample (mean {p.metrics['cosine_mean']:.4f}), below the {precision} budget of {floor:g} (min_cosine)")))
    snr, worst = _snr_of_outputs_without_own_budget(p, budgets)
    if snr is not None:
        min_snr = budgets.min_snr_db[precision]
        checks.append(GateCheck(
            # Bit-identical outputs have no noise: infinite SNR, recorded as null.
            budget="min_snr_db", value=None if math.isinf(snr) and snr > 0 else snr, limit=min_snr,
            passed=snr >= min_snr,
            failure=(f"{_what(rec)}: {'logit ' if p.task == 'classification' else ''}SNR against the fp32 reference "
                     f"{snr:.1f} dB{worst} is below the {precision} budget of {min_snr:g} dB (min_snr_db)")))
    checks.extend(output_checks(budgets, rec))
    checks.extend(metric_check(budgets, rec))
    size = rec.artifact.size_bytes
    if budgets.max_size_bytes is not None:
        checks.append(GateCheck(
            budget="max_size_bytes", value=size, limit=budgets.max_size_bytes, passed=size <= budgets.max_size_bytes,
            failure=f"{rec.file}: size {size:,} bytes exceeds the budget of {budgets.max_size_bytes:,} bytes"))
    return checks


def _snr_of_outputs_without_own_budget(p, budgets) -> tuple[float | None, str]:
    """The SNR the target's `min_snr_db` judges, and which output it is of when there are
    several: the lowest over the outputs that have no `[budgets.outputs.<name>]` of their
    own. An output with its own budget is judged by that instead (a detector's box
    corrections are judged in crop widths, not by an SNR dominated by non-face crops);
    None when every output has one."""
    if not p.outputs:
        return p.snr_db, ""
    judged = [n for n in p.outputs if n not in budgets.outputs]
    if not judged:
        return None, ""
    name = min(judged, key=lambda n: p.outputs[n].snr_db)
    if len(p.outputs) < 2:
        return p.outputs[name].snr_db, ""
    others = "" if len(judged) == len(p.outputs) else " without a budget of its own"
    return p.outputs[name].snr_db, f" (output {name!r}, the lowest of {len(judged)}{others})"


def output_checks(budgets, rec: ArtifactRecord) -> list[GateCheck]:
    """`[budgets.outputs.<name>]`: the share of the output's elements within atol + rtol
    |ref| of the fp32 model's, and its own SNR floor."""
    checks = []
    for name, ob in budgets.outputs.items():
        out = rec.parity.outputs.get(name)
        if out is None:
            continue
        if ob.atol is not None or ob.rtol is not None:
            share = out.within(ob.atol, ob.rtol) * 100.0
            tolerance = " + ".join(t for t in (f"{ob.atol:g}" if ob.atol is not None else "",
                                               f"{ob.rtol:g} x |ref|" if ob.rtol is not None else "") if t)
            checks.append(GateCheck(
                budget=f"outputs.{name}.within_tolerance", value=share, limit=ob.min_within_pct,
                passed=share >= ob.min_within_pct,
                failure=(f"{_what(rec)}: output {name!r}: {share:.2f}% of its values are within {tolerance} of the "
                         f"fp32 reference (largest error {out.max_abs_error:.4g}), below the budget of "
                         f"{ob.min_within_pct:g}% (budgets.outputs.{name})")))
        if ob.min_snr_db is not None and rec.precision in ob.min_snr_db:
            floor = ob.min_snr_db[rec.precision]
            checks.append(GateCheck(
                budget=f"outputs.{name}.min_snr_db", value=None if math.isinf(out.snr_db) and out.snr_db > 0 else out.snr_db,
                limit=floor, passed=out.snr_db >= floor,
                failure=(f"{_what(rec)}: output {name!r}: SNR against the fp32 reference {out.snr_db:.1f} dB is below "
                         f"the {rec.precision} budget of {floor:g} dB (budgets.outputs.{name}.min_snr_db)")))
    return checks


def metric_check(budgets, rec: ArtifactRecord) -> list[GateCheck]:
    """`gated_metric`: the artifact's value may be at most `max_metric_drop` worse than
    the original model's (lower for a "higher" metric, higher for a "lower" one)."""
    from edgepack.verify.tasks import metric_direction

    name = budgets.gated_metric
    p = rec.parity
    if name is None or name not in p.metrics or name not in p.reference_metrics:
        return []
    direction = budgets.metric_direction or metric_direction(name) or "higher"
    value, reference = p.metrics[name], p.reference_metrics[name]
    worse = reference - value if direction == "higher" else value - reference
    return [GateCheck(
        budget="max_metric_drop", value=worse, limit=budgets.max_metric_drop, passed=worse <= budgets.max_metric_drop,
        failure=(f"{_what(rec)}: {name} {value:.4g} vs reference {reference:.4g} ({direction} is better): "
                 f"{'drop' if direction == 'higher' else 'increase'} {worse:.4g} exceeds the budget of "
                 f"{budgets.max_metric_drop:g} (max_metric_drop)"))]


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
