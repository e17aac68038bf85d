"""report.html: one self-contained page per build (inline CSS, plots as base64 PNG, no
script, no network), readable from a release archive on any machine.

Everything on it comes from the manifest, so a report can be regenerated from any
manifest, and it copes with any number of artifacts, stages and devices, including none.
matplotlib is imported here only, through its object API (no pyplot, no global backend),
and rendered with matplotlib's default style so a user's matplotlibrc cannot change it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgepack.release.scores import score_columns

REPORT_FILE = "report.html"
PALETTE = ("#3366cc", "#dc7633", "#2ca25f", "#8e44ad", "#c0392b", "#17a2b8", "#7f8c8d", "#b7950b")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.sub{color:#5a6473;margin:0 0 16px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #dde1e7;padding:8px}figure img{width:100%;height:auto;display:block}
figcaption{color:#5a6473;font-size:12px;margin-top:4px}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;background:#eef1f5;padding:1px 4px;border-radius:3px;word-break:break-all}
.note{color:#5a6473}ul.fail{color:#c62828}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _human_bytes(n) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _label(a: dict) -> str:
    return f"{a.get('format', '?')} {a.get('precision', '')}".strip()


def _png(fig) -> str:
    buf = io.BytesIO()
    # No "Software" text chunk: the bytes then depend on the drawing, not on the version string.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width=5.6, height=3.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _bar(labels: list[str], values: list[float], *, title: str, ylabel: str, ref: tuple[float, str] | None = None,
         errors: list[float] | None = None, fmt: str = "{:.3g}", zoom: bool = False) -> str:
    fig, ax = _figure()
    x = range(len(values))
    bars = ax.bar(x, values, color=[PALETTE[i % len(PALETTE)] for i in x], yerr=errors, capsize=4 if errors else 0)
    ax.set_xticks(list(x), labels, rotation=15 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    for rect, v in zip(bars, values):
        ax.annotate(fmt.format(v), (rect.get_x() + rect.get_width() / 2, rect.get_height()), ha="center", va="bottom",
                    fontsize=8, xytext=(0, 2), textcoords="offset points")
    if ref is not None:
        ax.axhline(ref[0], color="#555", linestyle="--", linewidth=1, label=ref[1])
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    if zoom and values:  # accuracies differ by tenths of a point: a 0-based axis hides that
        low = min(values + ([ref[0]] if ref else []))
        high = max(values + ([ref[0]] if ref else []))
        pad = max(0.5, (high - low) * 0.5)
        ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (smaller x, higher y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _pareto(items: list[tuple[str, float, float]], *, xlabel: str, title: str, xscale_bytes: bool) -> str:
    fig, ax = _figure()
    pts = [(x, y) for _, x, y in items]
    for i, (name, x, y) in enumerate(items):
        ax.scatter([x / 1e3 if xscale_bytes else x], [y], color=PALETTE[i % len(PALETTE)], s=50, zorder=3)
        ax.annotate(name, (x / 1e3 if xscale_bytes else x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    front = _pareto_front(pts)
    if len(front) > 1:
        ax.plot([pts[i][0] / 1e3 if xscale_bytes else pts[i][0] for i in front], [pts[i][1] for i in front],
                color="#888", linestyle=":", zorder=2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    # Equal accuracies would otherwise get an axis of 1e-5 steps with an offset label.
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ys = [y for _, y in pts]
    if ys and max(ys) - min(ys) < 1.0:
        mid = (max(ys) + min(ys)) / 2
        ax.set_ylim(mid - 1.0, mid + 1.0)
    return _png(fig)


def _ops(artifacts: list[dict]) -> str | None:
    """Operator counts per artifact: what each runtime will actually execute."""
    rows = [(a, (a.get("export") or {}).get("ops") or {}) for a in artifacts]
    rows = [(a, ops) for a, ops in rows if ops]
    if not rows:
        return None
    names = sorted({op for _, ops in rows for op in ops})
    fig, ax = _figure(height=max(2.6, 0.28 * len(names) * len(rows) / 2 + 1.2))
    height = 0.8 / len(rows)
    for k, (a, ops) in enumerate(rows):
        ys = [i + k * height for i in range(len(names))]
        ax.barh(ys, [ops.get(n, 0) for n in names], height=height, color=PALETTE[k % len(PALETTE)], label=a["file"])
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("operator count")
    ax.set_title("operators per artifact", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _stage_plot(stages: list[dict]) -> str | None:
    if not stages:
        return None
    fig, ax = _figure()
    names = [s.get("name", "?") for s in stages]
    x = list(range(len(stages)))
    sizes = [(s.get("size_bytes") or 0) / 1e3 for s in stages]
    ax.bar(x, sizes, color=PALETTE[0], alpha=0.8, label="size (KB)")
    ax.set_xticks(x, names, rotation=15 if len(names) > 3 else 0)
    ax.set_ylabel("size (KB)")
    acc = [s.get("accuracy") for s in stages]
    if any(v is not None for v in acc):
        ax2 = ax.twinx()
        ax2.plot([i for i, v in enumerate(acc) if v is not None], [v * 100 for v in acc if v is not None],
                 color=PALETTE[1], marker="o", label="accuracy (%)")
        ax2.set_ylabel("accuracy (%)")
        ax2.margins(y=0.3)
    ax.set_title("size and accuracy per stage", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _latency_rows(artifacts: list[dict]) -> list[tuple[str, str, dict, float, float]]:
    """(artifact label, device, method, p50, p90) for the host measurement and every
    device measurement or estimate the manifest holds."""
    rows = []
    for a in artifacts:
        lat = a.get("latency_ms") or {}
        if "p50" in lat:
            rows.append((a["file"], f"host ({lat.get('machine', '?')})", "measured", lat["p50"], lat.get("p90", lat["p50"])))
        for m in a.get("measurements") or []:
            if m.get("p50_ms") is not None:
                rows.append((a["file"], m.get("device", "?"), m.get("method", "?"), m["p50_ms"], m.get("p90_ms") or m["p50_ms"]))
    return rows


def _latency_plot(rows) -> str | None:
    if not rows:
        return None
    devices = sorted({(d, meth) for _, d, meth, _, _ in rows})
    files = list(dict.fromkeys(r[0] for r in rows))
    fig, ax = _figure()
    width = 0.8 / len(devices)
    for k, (dev, meth) in enumerate(devices):
        vals = {f: (p50, p90) for f, d, m, p50, p90 in rows if (d, m) == (dev, meth)}
        xs = [i + k * width for i, f in enumerate(files) if f in vals]
        ys = [vals[f][0] for f in files if f in vals]
        err = [max(0.0, vals[f][1] - vals[f][0]) for f in files if f in vals]
        ax.bar(xs, ys, width=width, yerr=[[0] * len(err), err], capsize=3, color=PALETTE[k % len(PALETTE)],
               label=f"{dev} ({meth})", hatch="//" if meth == "estimated" else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(files))], files, rotation=15 if len(files) > 3 else 0)
    ax.set_ylabel("latency per inference (ms), p50; bar to p90")
    ax.set_title("latency per artifact and device (batch 1)", fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _metric_plot(m: dict, arts: list[dict], labels: list[str]) -> list[tuple[str, str]]:
    """For a task other than classification: the gated metric (or the task's headline
    score) of each artifact, the source model's dashed."""
    from edgepack.verify.tasks import HEADLINE_METRIC

    ev = m.get("evaluation") or {}
    name = (m.get("budgets") or {}).get("gated_metric") or HEADLINE_METRIC.get(ev.get("task") or "")
    values = [(a.get("metrics") or {}).get(name) for a in arts] if name else []
    if not values or any(v is None for v in values):
        return []
    ref = (ev.get("reference_metrics") or {}).get(name)
    return [(_bar(labels, values, title=f"{name} on the evaluation split", ylabel=name,
                  ref=(ref, "fp32 reference") if ref is not None else None, fmt="{:.4g}", zoom=True),
             f"{name} of each artifact run in its own runtime; dashed: the source model.")]


def _per_output_table(arts: list[dict]) -> str:
    """Parity per named output, where the model has several or a target declared a
    tolerance for one: its largest error, SNR and share within tolerance."""
    rows = [[a["file"], name, f"{o['max_abs_error']:.4g}", "exact" if o.get("snr_db") is None else f"{o['snr_db']:.1f}",
             "-" if o.get("within_tolerance") is None else
             f"{o['within_tolerance'] * 100:.2f}% within {o.get('atol') or 0:g} + {o.get('rtol') or 0:g} x |ref|"]
            for a in arts for name, o in (a.get("outputs") or {}).items()]
    if not any(len(a.get("outputs") or {}) > 1 or any("within_tolerance" in o for o in (a.get("outputs") or {}).values())
               for a in arts):
        return ""
    return "<h3>Per output, against the fp32 reference</h3>" + _table(
        ["file", "output", "max abs error", "SNR dB", "within tolerance"], rows, numeric={2, 3})


def _plots(m: dict) -> list[tuple[str, str]]:
    arts = m.get("artifacts") or []
    out: list[tuple[str, str]] = []
    if arts:
        labels = [a["file"] for a in arts]
        fp32 = (m.get("source") or {}).get("fp32_weight_bytes")
        out.append((_bar(labels, [a["size_bytes"] / 1e3 for a in arts], title="artifact size", ylabel="KB",
                         ref=(fp32 / 1e3, "fp32 weights of the source") if fp32 else None, fmt="{:.1f}"),
                    "File size of each artifact; the dashed line is the source model's fp32 weights."))
        ref_acc = (m.get("evaluation") or {}).get("reference_accuracy")
        accs = [a.get("accuracy") for a in arts]
        if all(v is not None for v in accs):
            out.append((_bar(labels, [v * 100 for v in accs], title="accuracy on the evaluation split", ylabel="%",
                             ref=(ref_acc * 100, "fp32 reference") if ref_acc is not None else None, fmt="{:.2f}", zoom=True),
                        "Top-1 accuracy of each artifact run in its own runtime; dashed: the source model."))
        else:
            out.extend(_metric_plot(m, arts, labels))
        lat = _latency_plot(_latency_rows(arts))
        if lat:
            out.append((lat, "Host latency is measured on the build machine, not the device; device rows say "
                             "whether they were measured or estimated."))
        items = [(a["file"], a["size_bytes"], a["accuracy"] * 100) for a in arts if a.get("accuracy") is not None]
        for s in m.get("stages") or []:
            if s.get("accuracy") is not None and s.get("size_bytes"):
                items.append((f"stage {s.get('name')}", s["size_bytes"], s["accuracy"] * 100))
        if items:
            out.append((_pareto(items, xlabel="size (KB)", title="accuracy vs size", xscale_bytes=True),
                        "Points on the dotted line are not beaten on both size and accuracy by any other."))
        lat_items = [(a["file"], a["latency_ms"]["p50"], a["accuracy"] * 100) for a in arts
                     if a.get("accuracy") is not None and "p50" in (a.get("latency_ms") or {})]
        if lat_items:
            out.append((_pareto(lat_items, xlabel="host latency p50 (ms)", title="accuracy vs latency", xscale_bytes=False),
                        "Latency here is the host measurement."))
    stage = _stage_plot(m.get("stages") or [])
    if stage:
        out.append((stage, "The per-stage table: the source model and each compression pass after it."))
    ops = _ops(arts)
    if ops:
        out.append((ops, "Operators in each exported graph, for the formats that list them (a .pte's XNNPACK subgraph is opaque)."))
    return out


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{_e(c)}</td>" if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _signature_text(sig: dict | None, kind: str) -> str:
    parts = []
    for t in (sig or {}).get(kind) or []:
        q = t.get("quantization")
        qs = f" q(scale={q['scale']:.6g}, zp={q['zero_point']})" if q else ""
        parts.append(f"{t.get('name')}: {t.get('dtype')} {t.get('shape')}{qs}")
    return "; ".join(parts) or "-"


def _int8_sections(arts: list[dict]) -> list[str]:
    """The int8 artifacts' per-layer sensitivity and, with keep_float = "auto", the search's
    steps (one analysis per build: shown once, naming the artifacts it applies to)."""
    with_sens = [a for a in arts if (a.get("export") or {}).get("sensitivity")]
    if not with_sens:
        return []
    export = with_sens[0]["export"]
    s = export["sensitivity"]

    def db(v):
        return "exact" if v is None else f"{v:.1f}"

    out = ["<h2>Int8 sensitivity</h2>",
           f"<p class=\"note\">{_e(', '.join(a['file'] for a in with_sens))}: {_e(s['method'])}; {s['samples']} samples; "
           f"every layer int8 at once: {_e(db(s['int8_snr_db']))} dB, {s['int8_agreement'] * 100:.1f}% agreement. "
           f"The {len(s['layers'])} of {s['layers_measured']} layers that lose most:</p>",
           _table(["layer", "SNR dB (only it int8)", "agreement", "weights", "MACs"],
                  [[r["layer"], db(r["snr_db"]), f"{r['agreement'] * 100:.1f}%", r["weights"], r["macs"]] for r in s["layers"]],
                  numeric={1, 2, 3, 4})]
    mp = export.get("mixed_precision")
    if mp:
        b = mp["budget"]
        out.append(f"<p class=\"note\">keep_float = \"auto\" kept {len(mp['keep_float'])} layer(s) in float "
                   f"({_e(', '.join(mp['keep_float']) or 'none')}) for agreement &ge; {b['min_agreement_pct']:g}% and SNR "
                   f"&ge; {b['min_snr_db']:g} dB, predicted in torch on {mp['samples']} samples; each step:</p>")
        out.append(_table(["step", "layer added to float", "agreement", "SNR dB", "extra bytes", "MACs in float"],
                          [[i, st["float_layers"][-1] if st["float_layers"] else "(all int8)", f"{st['agreement'] * 100:.1f}%",
                            db(st["snr_db"]), _human_bytes(st["extra_bytes"]), f"{st['float_macs_pct']:.1f}%"]
                           for i, st in enumerate(mp["steps"])], numeric={0, 2, 3, 4, 5}))
    return out


def render(m: dict) -> str:
    """The report page for one manifest."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        plots = _plots(m)
    proj = m.get("project") or {}
    gates = m.get("gates") or {}
    passed = gates.get("passed", True)
    arts = m.get("artifacts") or []
    ev = m.get("evaluation") or {}
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
        "<link rel=\"icon\" href=\"data:,\">",  # no favicon request: the page never touches the network
        f"<title>{_e(proj.get('name', '?'))} {_e(proj.get('version', ''))} for {_e(m.get('target', '?'))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{_e(proj.get('name', '?'))} {_e(proj.get('version', ''))} for {_e(m.get('target', '?'))} "
        f"<span class=\"badge {'pass' if passed else 'fail'}\">{'within budget' if passed else 'FAILED budget'}</span></h1>",
        f"<p class=\"sub\">{_e(proj.get('description', ''))} &middot; device profile {_e(m.get('device_profile', '?'))} "
        f"&middot; {len(arts)} artifact(s) &middot; evaluated on {_e(ev.get('samples', '?'))} samples</p>",
    ]
    if gates.get("failures"):
        parts.append("<ul class=\"fail\">" + "".join(f"<li>{_e(f)}</li>" for f in gates["failures"]) + "</ul>")
    parts.append("<h2>Artifacts</h2>")
    if arts:
        rows = []
        scores = score_columns(m)
        for a in arts:
            lat = a.get("latency_ms") or {}
            rows.append([a["file"], _label(a), _human_bytes(a["size_bytes"]),
                         f"{a['size_vs_fp32_weights']:.3f}x" if "size_vs_fp32_weights" in a else "-",
                         *(show(a) for _, show, _ in scores),
                         "exact" if a.get("snr_db") is None else f"{a['snr_db']:.1f}",
                         f"{lat['p50']:.4f}" if "p50" in lat else "-", a["sha256"][:16]])
        parts.append(_table(["file", "format", "size", "vs fp32", *(h for h, _, _ in scores), "SNR dB",
                             "host p50 ms", "sha256 (prefix)"], rows, numeric=set(range(2, 6 + len(scores)))))
        parts.append(_per_output_table(arts))
        parts.append("<h2>Inputs and outputs</h2>")
        parts.append(_table(["file", "inputs", "outputs"],
                            [[a["file"], _signature_text(a.get("signature"), "inputs"), _signature_text(a.get("signature"), "outputs")]
                             for a in arts]))
    else:
        parts.append("<p class=\"note\">This build has no artifacts.</p>")
    parts.extend(_int8_sections(arts))
    parts.append("<h2>Plots</h2>")
    if plots:
        parts.append("<div class=\"plots\">" + "".join(
            f"<figure><img alt=\"{_e(cap)}\" src=\"data:image/png;base64,{png}\"><figcaption>{_e(cap)}</figcaption></figure>"
            for png, cap in plots) + "</div>")
    else:
        parts.append("<p class=\"note\">Nothing to plot.</p>")
    stages = m.get("stages") or []
    op_rows = [[a["file"], f"{m.get('device', '?')} ({m.get('runner', '?')})", r["op"], r["nodes"],
                f"{r['ms_per_inference']:.4f}", f"{r['share'] * 100:.1f}%"]
               for a in arts for m in a.get("measurements") or [] if isinstance(m.get("ops"), list) for r in m["ops"]]
    if op_rows:  # recorded by `edgepack profile --ops` where the runtime has a profiler
        parts.append("<h2>Time per operator</h2>" + _table(["file", "device (runner)", "op", "nodes", "ms / inference", "share"],
                                                           op_rows, numeric={3, 4, 5}))
    parts.append("<h2>Stages</h2>")
    if stages:
        parts.append(_table(["stage", "kind", "parameters", "MACs", "size (fp32)", "zipped", "accuracy", "F1 macro", "cache"],
                            [[s.get("name"), s.get("kind"), s.get("parameters", "-"), s.get("macs", "-"),
                              _human_bytes(s["size_bytes"]) if s.get("size_bytes") else "-",
                              _human_bytes(s["zipped_bytes"]) if s.get("zipped_bytes") else "-",
                              f"{s['accuracy'] * 100:.2f}%" if s.get("accuracy") is not None else "-",
                              f"{s['f1_macro'] * 100:.2f}%" if s.get("f1_macro") is not None else "-",
                              s.get("cache", "-")] for s in stages], numeric={2, 3, 4, 5, 6, 7}))
    else:
        parts.append("<p class=\"note\">No stage table in this manifest.</p>")
    recipe = m.get("recipe") or {}
    passes = ", ".join(f"{r.get('pass')}" for r in recipe.get("stages") or [])
    parts.append(f"<p class=\"note\">Compression recipe {_e(recipe.get('name', 'none'))}: "
                 f"{_e(passes or 'no model stages (the source model is exported as trained)')}; then quantization "
                 f"({_e(', '.join(f'{k}={v}' for k, v in (recipe.get('quantize') or {}).items()))}).</p>")
    src = m.get("source") or {}
    cal = m.get("calibration") or {}
    git = m.get("git")
    prov = [["source weights", f"{src.get('file', '?')} sha256 {src.get('sha256', '?')}"],
            ["calibration data", f"{cal.get('samples', '?')} samples, sha256 {cal.get('sha256', '-')}"],
            ["evaluation data", f"{ev.get('samples', '?')} samples, sha256 {ev.get('sha256', '-')}"],
            ["project commit", "not a git checkout" if not git else f"{git['commit']}{' (uncommitted changes)' if git.get('dirty') else ''}"]]
    parts.append("<h2>Provenance</h2>" + _table(["what", "value"], prov))
    tc = m.get("toolchain") or {}
    parts.append("<h2>Toolchain</h2>" + _table(["package", "version"], [[k, v] for k, v in sorted(tc.items())]))
    budgets = m.get("budgets") or {}
    if budgets:
        def shown(v):   # per-precision budgets are tables: "int8 98, fp32 99"; per output: "boxes: atol 0.05"
            if v is None:
                return "-"
            if isinstance(v, dict):
                return ", ".join(f"{p} {x:g}" if isinstance(x, (int, float)) else f"{p}: {shown(x)}"
                                 for p, x in v.items() if x is not None) or "-"
            return v

        parts.append("<h2>Budgets</h2>" + _table(["budget", "value"], [[k, shown(v)] for k, v in sorted(budgets.items())
                                                                       if v not in (None, {})]))
        if gates.get("latency"):
            parts.append(f"<p class=\"note\">Latency gate: {_e(gates['latency'])}</p>")
    parts.append(f"<p class=\"note\">Generated by edgepack {_e(tc.get('edgepack', '?'))} from manifest schema {_e(m.get('schema', '?'))}.</p>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_report(manifest: dict, folder: Path) -> Path:
    """Write folder/report.html for this manifest and return its path."""
    path = folder / REPORT_FILE
    path.write_text(render(manifest), encoding="utf-8")
    return path
