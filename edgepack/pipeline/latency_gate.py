"""A target's latency budget: judged on device estimates, refused, or explicitly waived.

Host wall time is not a device's latency, so `max_latency_ms` is held against the
estimate for the target's device, which needs instructions counted on its emulated CPU
(`--runner qemu`). A build without an estimate for an artifact cannot judge the budget:
it fails, naming both ways out (`--runner qemu`, or `--no-latency-gate`, a waiver the
manifest records) instead of passing with a note that a reader may never see."""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.pipeline.records import ArtifactRecord, GateCheck

# gates.latency_gate in the manifest
GATED, WAIVED, NO_BUDGET, UNJUDGED = "gated", "waived", "no_budget", "unjudged"


@dataclass(frozen=True)
class LatencyJudgement:
    checks: dict[str, tuple[GateCheck, ...]]   # file -> its max_latency_ms check (none when waived or no budget)
    state: str                                 # GATED, WAIVED, NO_BUDGET or UNJUDGED
    note: str                                  # the manifest's gates.latency and the build's latency line


def judge(device, records: list[ArtifactRecord], budget_ms: float | None, *, runner: str,
          enabled: bool = True) -> LatencyJudgement:
    from edgepack.devices.latency import latency_gate, unjudged_failure

    if budget_ms is None:
        return LatencyJudgement({}, NO_BUDGET, "no latency budget")
    if not enabled:
        return LatencyJudgement({}, WAIVED, (f"not gated: max_latency_ms = {budget_ms:g} waived by --no-latency-gate "
                                             f"(no {device.name} latency was judged)"))
    if not records:   # every artifact failed to build: the build fails as incomplete already
        return LatencyJudgement({}, UNJUDGED, "not judged: no artifact was built")
    unjudged = [r.file for r in records if r.estimate() is None]
    line = unjudged_failure(device, budget_ms, unjudged, runner) if unjudged else ""
    checks = {}
    for r in records:
        estimate = r.estimate()
        if estimate is None:
            # The same line for every unjudged artifact: the verdict prints it once.
            checks[r.file] = (GateCheck(budget="max_latency_ms", value=None, limit=budget_ms, passed=False,
                                        device=device.name, failure=line),)
            continue
        row = estimate.to_json()
        failures = latency_gate(r.file, device, row, budget_ms)
        checks[r.file] = (GateCheck(budget="max_latency_ms", value=row["p50_ms"], limit=budget_ms, passed=not failures,
                                    device=device.name, failure=failures[0] if failures else ""),)
    if unjudged:
        return LatencyJudgement(checks, UNJUDGED, (f"not judged: no {device.name} estimate in this build "
                                                   f"({runner} runner); the budget fails, see below"))
    return LatencyJudgement(checks, GATED, f"gated on estimates for {device.name} (instructions counted on {device.qemu_cpu})")


def unjudgeable(plan) -> list[str]:
    """Before any work: one line per target whose max_latency_ms this build will not be
    able to judge (a host build that does not waive it), so nobody waits minutes to learn it."""
    if plan.runner != "host" or not plan.latency_gate:
        return []
    return [f"{tp.target.name}: max_latency_ms = {tp.target.budgets.max_latency_ms:g} cannot be judged by a host build "
            f"and will fail it; --runner qemu judges it, --no-latency-gate waives it"
            for tp in plan.targets if tp.target.budgets.max_latency_ms is not None]
