"""The matrix's one result: `matrix.json` (every step and every build) and `index.html`
(a page linking each target's report), both in the matrix's output folder."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

MATRIX_SCHEMA = "edgepack.matrix/1"


def result_doc(plan, states, *, executor: str, seconds: float, interrupted: bool) -> dict:
    by_id = {st.step.id: st for st in states}
    builds = []
    for b in plan.builds:
        st = by_id[b.step]
        targets = (st.result or {}).get("targets", [])
        builds.append({"project": b.project, "recipe": b.recipe, "project_dir": str(b.project_dir),
                       "status": st.status, "exit_code": (st.result or {}).get("exit_code"),
                       "output_dir": str(b.output_dir), "targets": targets})
    failures = [{"step": st.step.label, "kind": st.step.kind, "attempts": st.attempts, "errors": st.errors}
                for st in states if st.status == "failed"]
    failures += [{"step": f"{b['project']}/{b['recipe']}: build", "target": t["target"], "kind": "budget",
                  "errors": t["failures"] + [f"{f['file']}: {f['error']}" for f in t.get("failed_artifacts", [])]}
                 for b in builds for t in b["targets"] if not (t["passed"] and t["complete"])]
    ok = not interrupted and all(st.status == "done" for st in states) and not failures
    return {"schema": MATRIX_SCHEMA, "ok": ok, "interrupted": interrupted, "executor": executor,
            "seconds": round(seconds, 2), "matrix_file": str(plan.matrix_file), "output_dir": str(plan.output_dir),
            "steps": [st.as_dict() for st in states], "builds": builds, "failures": failures}


def write_results(doc: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    result, index = out / "matrix.json", out / "index.html"
    for path, text in ((result, json.dumps(doc, indent=2, sort_keys=True) + "\n"), (index, index_html(doc, out))):
        tmp = path.with_suffix(path.suffix + ".partial")
        tmp.write_text(text)
        os.replace(tmp, path)
    return result, index


def index_html(doc: dict, out: Path) -> str:
    rows = []
    for b in doc["builds"]:
        if not b["targets"]:
            rows.append(f"<tr><td>{html.escape(b['project'])}</td><td>{html.escape(b['recipe'])}</td><td></td>"
                        f"<td class=bad>{html.escape(b['status'])}</td><td></td></tr>")
        for t in b["targets"]:
            dist = Path(t["dist"]) if t.get("dist") else None
            report = dist / "report.html" if dist else None
            link = (f"<a href=\"{html.escape(os.path.relpath(report, out))}\">report</a>"
                    if report is not None and report.is_file() else "")
            verdict = "passed" if t["passed"] and t["complete"] else "; ".join(t["failures"]) or "incomplete"
            files = ", ".join(f"{a['file']} ({a['size_bytes']} B)" for a in t["artifacts"])
            rows.append(f"<tr><td>{html.escape(b['project'])}</td><td>{html.escape(b['recipe'])}</td>"
                        f"<td>{html.escape(t['target'])}</td><td class={'ok' if verdict == 'passed' else 'bad'}>"
                        f"{html.escape(verdict)}</td><td>{html.escape(files)}</td><td>{link}</td></tr>")
    failed = "".join(f"<li>{html.escape(f['step'])}: {html.escape('; '.join(f['errors']))}</li>" for f in doc["failures"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgepack matrix</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}
.ok{{color:#070}}.bad{{color:#b00}}</style></head><body>
<h1>edgepack matrix</h1>
<p>{html.escape(doc['matrix_file'])}: {'all builds passed' if doc['ok'] else 'not all builds passed'};
executor {html.escape(doc['executor'])}; {doc['seconds']:.1f} s; {len(doc['steps'])} steps.</p>
<table><tr><th>project</th><th>recipe</th><th>target</th><th>verdict</th><th>artifacts</th><th></th></tr>
{''.join(rows)}</table>
{'<h2>Failures</h2><ul>' + failed + '</ul>' if failed else ''}
</body></html>
"""
