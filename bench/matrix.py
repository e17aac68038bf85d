"""One build matrix run serially, on the local process pool and on Ray (one node), side
by side: wall time, and whether every artifact came out byte-identical.

    .venv/bin/python bench/matrix.py [--projects digits,fashion,mobilenet_v2] [--targets android,raspberry-pi,linux-arm64]
                                     [--executors serial,local,ray] [--json]

Each executor builds fresh copies of the sample projects (no cache shared between runs).
From the serial run's step times it also prints the step graph's total work and its
critical path (the longest chain of dependent steps): the wall time no number of nodes
can beat, and total / workers, what more workers approach until the critical path binds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def write_matrix(folder: Path, projects: list[str], targets: list[str]) -> Path:
    for name in projects:
        shutil.copytree(REPO / "samples" / name, folder / name, ignore=shutil.ignore_patterns(".edgepack-cache", "dist"))
    entries = "".join(f'[[entries]]\nproject = "{p}"\ntargets = {json.dumps(targets)}\n' for p in projects)
    path = folder / "matrix.toml"
    path.write_text(f'[matrix]\noutput_dir = "out"\nlatency_gate = false\n{entries}')
    return path


def run(executor: str, projects: list[str], targets: list[str], folder: Path) -> dict:
    matrix = write_matrix(folder, projects, targets)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgepack", "matrix", str(matrix), "--executor", executor, "--json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{executor}: edgepack matrix exited {proc.returncode}")
    doc = json.loads(proc.stdout)
    artifacts = {}
    for b in doc["builds"]:
        for t in b["targets"]:
            for a in t["artifacts"]:
                artifacts[f"{b['project']}/{b['recipe']}/{t['target']}/{a['file']}"] = a["sha256"]
    return {"executor": executor, "wall_s": wall, "doc": doc, "artifacts": artifacts}


def critical_path(doc: dict) -> tuple[float, float, list[str]]:
    steps = {s["id"]: s for s in doc["steps"]}
    memo: dict[str, tuple[float, list[str]]] = {}

    def longest(sid: str) -> tuple[float, list[str]]:
        if sid not in memo:
            s = steps[sid]
            before = max((longest(d) for d in s["deps"]), default=(0.0, []), key=lambda x: x[0])
            memo[sid] = (before[0] + s["seconds"], before[1] + [s["label"]])
        return memo[sid]

    total = sum(s["seconds"] for s in steps.values())
    length, chain = max((longest(sid) for sid in steps), key=lambda x: x[0])
    return total, length, chain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", default="digits,fashion,mobilenet_v2")
    parser.add_argument("--targets", default="android,raspberry-pi,linux-arm64")
    parser.add_argument("--executors", default="serial,local,ray")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    projects, targets = args.projects.split(","), args.targets.split(",")
    runs = []
    for executor in args.executors.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-matrix-{executor}-") as tmp:
            print(f"running the matrix on {executor} ...", file=sys.stderr, flush=True)
            runs.append(run(executor, projects, targets, Path(tmp)))
    base = runs[0]
    total, length, chain = critical_path(base["doc"])
    rows = [{"executor": r["executor"], "wall_s": round(r["wall_s"], 1), "vs_first": round(r["wall_s"] / base["wall_s"], 2),
             "steps": len(r["doc"]["steps"]), "artifacts": len(r["artifacts"]),
             "identical_to_first": r["artifacts"] == base["artifacts"]} for r in runs]
    doc = {"projects": projects, "targets": targets, "rows": rows,
           "first_run_step_seconds_total": round(total, 1), "critical_path_seconds": round(length, 1),
           "critical_path": chain}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    table = Table(title=f"matrix: {', '.join(projects)} x {', '.join(targets)}")
    for col in ("executor", "wall s", f"vs {base['executor']}", "steps", "artifacts", "identical"):
        table.add_column(col, justify="left" if col == "executor" else "right")
    for r in rows:
        table.add_row(r["executor"], f"{r['wall_s']:.1f}", f"{r['vs_first']:.2f}x", str(r["steps"]), str(r["artifacts"]),
                      "yes" if r["identical_to_first"] else "NO")
    Console(width=160).print(table)
    print(f"{base['executor']} run: {total:.1f} s of step work in all; critical path {length:.1f} s "
          f"({' -> '.join(chain)})")
    return 0 if all(r["identical_to_first"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
