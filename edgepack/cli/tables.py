"""Tables a person reads; the same facts are in the JSON output and manifest.json."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from edgepack.release.scores import reference_line, score_columns


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def plan_table(plan) -> Table:
    d = plan.as_dict()
    table = Table(title=f"build plan: {d['project']} -> {d['output_dir']} (runner: {d['runner']})", title_justify="left")
    for col in ("target", "device", "format", "precision", "delegate", "file", "budgets"):
        table.add_column(col)
    task = d.get("task", "classification")
    for t in d["targets"]:
        b = t["budgets"]
        quality = f"accuracy drop <= {b['max_accuracy_drop_pt']:g} pt; " if task == "classification" else ""
        if b.get("gated_metric"):
            quality += f"{b['gated_metric']} drop <= {b['max_metric_drop']:g}; "
        budget = (f"{quality}size <= {human_bytes(b['max_size_bytes']) if b['max_size_bytes'] else '-'}; "
                  f"latency <= {b['max_latency_ms'] or '-'} ms on {t['device']}"
                  + (" (waived: --no-latency-gate)" if b["max_latency_ms"] and not d["latency_gate"] else ""))
        for i, a in enumerate(t["artifacts"]):
            floors = [f"agreement >= {b['min_agreement_pct'][a['precision']]:g}%"] if task == "classification" else []
            if task == "embedding":
                floors.append(f"cosine >= {b['min_cosine'][a['precision']]:g}")
            floors.append(f"SNR >= {b['min_snr_db'][a['precision']]:g} dB")
            floors.extend(_output_floor(name, o, a["precision"]) for name, o in (b.get("outputs") or {}).items())
            parity = ", ".join(floors)
            table.add_row(t["name"], t["device"], a["format"], a["precision"], a["delegate"], a["file"],
                          f"{budget}; {parity}" if i == 0 else parity)
        for u in t.get("skipped_artifacts") or []:
            table.add_row(t["name"], t["device"], u["format"], u["precision"], "-", Text("skipped", style="yellow"),
                          Text(f"unreachable ([build] skip_unreachable): {u['reason']}", style="yellow"))
    return table


def estimate_cell(artifact: dict) -> str:
    """The artifact's device estimate, marked when no published row of its runtime,
    precision and thread count validates it (the manifest's expected_error says why)."""
    row = next((r for r in artifact.get("measurements") or [] if r.get("method") == "estimated"), None)
    if row is None:
        return "-"
    validated = ((row.get("estimate") or {}).get("expected_error") or {}).get("validated", False)
    return f"~{row['p50_ms']:.2f} ms" + ("" if validated else " (unvalidated)")


def _count(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _output_floor(name: str, budget: dict, precision: str) -> str:
    """One `[budgets.outputs.<name>]` as the plan shows it for an artifact's precision."""
    parts = []
    tolerance = " + ".join(t for t in (f"{budget['atol']:g}" if budget.get("atol") is not None else "",
                                       f"{budget['rtol']:g} x |ref|" if budget.get("rtol") is not None else "") if t)
    if tolerance:
        within = budget.get("min_within_pct", 100.0)
        parts.append(f"within {tolerance}" + ("" if within >= 100 else f" for >= {within:g}%"))
    snr = (budget.get("min_snr_db") or {}).get(precision)
    if snr is not None:
        parts.append(f"SNR >= {snr:g} dB")
    return f"{name}: " + ", ".join(parts or ["-"])


def stage_notes(stages: list[dict]) -> list[str]:
    """One line per note on a stage row (an unreadable cache entry, predictions made in
    chunks): what did not go the usual way, said where the numbers are."""
    return [f"stage {r['stage']} ({r['name']}): {n}" for r in stages for n in r.get("notes") or ()]


def fallback_notes(manifest: dict) -> list[str]:
    """One line per artifact whose exporter took a fallback or calibrated on fewer
    samples than the build handed it."""
    total = (manifest.get("calibration") or {}).get("samples")
    lines = []
    for a in manifest.get("artifacts") or []:
        export = a.get("export") or {}
        taken = "; ".join(f"{f['step']} fell back to {f['taken']} ({f['reason']})" for f in export.get("fallbacks") or ())
        used = export.get("calibration_samples_used")
        if used is not None:
            taken = f"calibrated on {used} of {total} samples" + (f": {taken}" if taken else "")
        if taken:
            lines.append(f"{a['file']}: {taken}")
    return lines


def float_op_notes(manifest: dict) -> list[str]:
    """One line per int8 artifact that computes some ops in float (LiteRT with
    strict_int8 = false, or keep_float): the op types and how many of each."""
    lines = []
    for a in manifest.get("artifacts") or []:
        ops = (a.get("export") or {}).get("float_ops")
        if ops:
            lines.append(f"{a['file']}: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
    return lines


def _db(v) -> str:
    return "exact" if v is None else f"{v:.1f} dB"


def int8_notes(manifest: dict, top: int = 3) -> list[str]:
    """The int8 artifacts' sensitivity (the `top` layers that lose most) and, with
    keep_float = "auto", each step of the search: measured once per build, so shown once."""
    arts = [a for a in manifest.get("artifacts") or [] if (a.get("export") or {}).get("sensitivity")]
    if not arts:
        return []
    export = arts[0]["export"]
    s = export["sensitivity"]
    files = ", ".join(a["file"] for a in arts)
    layers = ", ".join(f"{r['layer']} {_db(r['snr_db'])}" for r in s["layers"][:top])
    lines = [f"int8 sensitivity ({files}; each layer int8 alone, output SNR vs fp32 on {s['samples']} samples, "
             f"all layers int8: {_db(s['int8_snr_db'])}): {layers or 'no quantized layers'}"]
    mp = export.get("mixed_precision")
    if mp:
        b = mp["budget"]
        lines.append(f"keep_float auto ({len(mp['keep_float'])} layer(s) in float; budget agreement >= "
                     f"{b['min_agreement_pct']:g} %, SNR >= {b['min_snr_db']:g} dB; predicted in torch on {mp['samples']} samples):")
        for i, step in enumerate(mp["steps"]):
            added = step["float_layers"][-1] if step["float_layers"] else "all int8"
            lines.append(f"  step {i}: {'+' if step['float_layers'] else ''}{added}: {step['agreement'] * 100:.1f} %, "
                         f"{_db(step['snr_db'])}, +{human_bytes(step['extra_bytes'])}, "
                         f"{step['float_macs_pct']:.1f} % of MACs in float")
    return lines


def stage_table(stages: list[dict], evaluated_on: str) -> Table:
    notes = stage_notes(stages)
    table = Table(title=f"compression stages (measured on the {evaluated_on} split)", title_justify="left",
                  caption="\n".join(notes) or None, caption_justify="left", caption_style="yellow")
    classifier = all(r.get("accuracy") is not None for r in stages)
    # Other tasks: their scores by name; a drop is in the gated metric's own units.
    names = [] if classifier else list(dict.fromkeys(k for r in stages for k in (r.get("metrics") or {})))
    unit = " pt" if classifier else ""
    quality = ("accuracy", "F1 macro") if classifier else tuple(names)
    for col in ("#", "stage", "params", "nonzero", "MACs", "fp32 size", "zipped", *quality, "Δ acc" if classifier else "Δ", "Δ vs original", "time", "cache"):
        table.add_column(col, justify="left" if col in ("stage", "cache") else "right")
    for r in stages:
        scores = ((f"{r['accuracy'] * 100:.2f}%", f"{r['f1_macro'] * 100:.2f}%") if classifier else
                  tuple("-" if (r.get("metrics") or {}).get(n) is None else f"{r['metrics'][n]:.4g}" for n in names))
        table.add_row(
            str(r["stage"]), r["name"], _count(r["parameters"]), _count(r["nonzero_parameters"]), _count(r["macs"]),
            human_bytes(r["fp32_bytes"]), human_bytes(r["zipped_bytes"]), *scores,
            f"{(-r['drop_pt']) + 0.0:+.2f}{unit}" if r["stage"] else "",
            f"{(-r['total_drop_pt']) + 0.0:+.2f}{unit}" if r["stage"] else "", f"{r['seconds']:.1f} s" if r["stage"] else "",
            (r["cache"] + (" *" if r.get("notes") else "")) if r["stage"] else ("*" if r.get("notes") else ""),
        )
    return table


def timings_line(m: dict) -> str:
    """Where the build's time went: shared steps, then each artifact's export (or reuse),
    verification and emulated run."""
    build = m.get("timings_s") or {}
    parts = [f"{k} {v:.1f} s" for k, v in build.items()]
    for a in m.get("artifacts") or []:
        t = a.get("timings_s")
        if not t:
            continue
        steps = ["export reused" if t.get("export_reused") else f"export {t['export']:.1f} s", f"verify {t['verify']:.1f} s"]
        if t.get("emulate") is not None:
            steps.append(f"emulate {t['emulate']:.1f} s")
        parts.append(f"{a['file']}: " + ", ".join(steps))
    return ("time: " + "; ".join(parts)) if parts else ""


def build_tables(result) -> list:
    out = []
    first = result.targets[0].manifest if result.targets else None
    if first and len(first.get("stages") or []) > 1:
        out.append(stage_table(first["stages"], first["stages_evaluated_on"]))
    elif first:  # no stage table: its notes (the source model's) still show
        out.extend(Text(f"note: {n}", style="yellow") for n in stage_notes(first.get("stages") or []))
    for t in result.targets:
        m = t.manifest
        title = f"{result.project} for {t.target} (device profile {t.device})"
        table = Table(title=title, title_justify="left")
        scores = score_columns(m)
        for col, just in (("file", "left"), ("format", "left"), ("precision", "left"), ("size", "right"),
                          ("vs fp32", "right"), *((header, "right") for header, _, _ in scores),
                          ("SNR dB", "right"), ("host p50", "right")):
            table.add_column(col, justify=just)
        has_estimates = any(r.get("method") == "estimated" for a in m["artifacts"] for r in a.get("measurements") or [])
        if has_estimates:
            table.add_column(f"est. {t.device}", justify="right")
        for a in m["artifacts"]:
            lat = a["latency_ms"]
            failed = {c["budget"] for c in a.get("gates") or () if not c["passed"]}

            def cell(text: str, budget: str) -> Text:
                return Text(text, style="red" if budget in failed else "")

            table.add_row(
                a["file"], a["format"], a["precision"], cell(human_bytes(a["size_bytes"]), "max_size_bytes"),
                f"{a['size_vs_fp32_weights']:.2f}x", *(cell(show(a), budget) for _, show, budget in scores),
                cell("exact" if a["snr_db"] is None else f"{a['snr_db']:.1f}", "min_snr_db"),
                f"{lat['p50']:.3f} ms",
                *([estimate_cell(a)] if has_estimates else []),
            )
        for f in m.get("failed_artifacts") or []:
            table.add_row(f["file"], f["format"], f["precision"], Text(f"not built ({f['stage']} failed)", style="bold red"),
                          *[""] * (3 + len(scores) + has_estimates))
        out.append(table)
        lat0 = m["artifacts"][0]["latency_ms"] if m["artifacts"] else {}
        out.append(Text(
            f"reference ({m['source'].get('kind') or 'pytorch'} fp32): {reference_line(m)}; "
            f"vs fp32 = size / fp32 weights ({human_bytes(m['source']['fp32_weight_bytes'])}); "
            f"host latency: batch 1, {lat0.get('threads', '?')} thread(s), p50 of {lat0.get('iterations', '?')} runs "
            f"(not device latency)", style="dim"))
        out.append(Text(f"latency: {m['gates'].get('latency', '')}", style="dim"))
        if line := timings_line(m):
            out.append(Text(line, style="dim"))
        out.extend(Text(f"skipped: {u['format']} {u['precision']} (unreachable, [build] skip_unreachable): {u['reason']}",
                        style="yellow") for u in m.get("skipped_artifacts") or [])
        out.extend(Text(f"fallback: {line}", style="yellow") for line in fallback_notes(m))
        out.extend(Text(f"float ops in int8: {line}", style="yellow") for line in float_op_notes(m))
        out.extend(Text(line, style="dim") for line in int8_notes(m))
        for a in m["artifacts"]:
            for w in a.get("warnings") or []:
                out.append(Text(f"warning: {a['file']}: {w}", style="yellow"))
        if t.passed:
            out.append(Text(f"wrote {t.dist}", style="green"))
        elif not t.complete:
            out.append(Text(f"INCOMPLETE: {len(t.failed_artifacts)} artifact(s) of {t.target} could not be built; the others "
                            f"were built and verified in {t.rejected}, and {t.target}/ was left as it was:", style="bold red"))
            for f in t.failures:
                out.append(Text(f"  - {f}", style="red"))
        else:
            out.append(Text(f"FAILED the {t.target} budget; kept the build in {t.rejected} and left {t.target}/ as it was:", style="bold red"))
            for f in t.failures:
                out.append(Text(f"  - {f}", style="red"))
    return out
