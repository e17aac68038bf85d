"""Build wall time against the goals, and where it goes, measured in one run.

    .venv/bin/python bench/build_time.py [--builds digits,mobilenet_v2] [--json]

Each row runs `edgepack build --fresh --no-latency-gate` as a user does (a new process,
so Python and the toolchains' imports count), with nothing reused from earlier builds,
and reads the steps' seconds from the manifest's `timings_s`:

    digits        samples/digits for android (what `make demo` builds)       goal 30 s
    mobilenet_v2  samples/mobilenet_v2 for android                           goal 120 s

The goals are the int8 issue's: wall time on 2 cores. `other` is the wall time no step
accounts for (interpreter start, imports, planning, writing the dist). The machine's CPU
model and core count head the table: these figures mean nothing without them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe as describe_machine  # bench/, this script's folder
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BUILDS = {
    "digits": ("samples/digits", "android", 30.0),
    "mobilenet_v2": ("samples/mobilenet_v2", "android", 120.0),
}


def time_build(project: str, target: str, folder: Path) -> dict:
    edgepack = Path(sys.executable).parent / "edgepack"
    command = [str(edgepack), "build", "--project", str(REPO / project), "--target", target, "--output", str(folder),
               "--no-latency-gate", "--fresh"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"bench: edgepack build of {project} failed (exit {done.returncode}): {tail}")
    manifest = json.loads((folder / target / "manifest.json").read_text())
    shared = manifest.get("timings_s") or {}
    artifacts = [a.get("timings_s") or {} for a in manifest["artifacts"]]
    steps = {
        "load": shared.get("load", 0.0),
        "capture": shared.get("capture", 0.0),
        "compress": shared.get("compress", 0.0),
        "int8_choices": shared.get("int8_choices", 0.0),
        "export": sum(a.get("export", 0.0) for a in artifacts),
        "verify": sum(a.get("verify", 0.0) for a in artifacts),
    }
    return {"wall_s": round(wall, 1), "steps_s": {k: round(v, 1) for k, v in steps.items()},
            "other_s": round(wall - sum(steps.values()), 1), "artifacts": len(artifacts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", default=",".join(BUILDS), help=f"comma-separated, of: {', '.join(BUILDS)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.builds.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDS]
    if unknown:
        parser.error(f"unknown build {unknown[0]!r}; valid: {', '.join(BUILDS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        for name in names:
            project, target, goal = BUILDS[name]
            print(f"  building {project} for {target} ...", file=sys.stderr)
            measured = time_build(project, target, Path(tmp) / name)
            rows.append({"build": name, "project": project, "target": target, "goal_s": goal,
                         "ratio": round(measured["wall_s"] / goal, 2), **measured})
    machine = describe_machine()
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return 0
    table = Table(title=f"edgepack build wall time, fresh ({machine})")
    columns = ("build", "wall s", "goal s", "wall/goal", "load", "capture", "compress", "int8 choices", "export",
               "verify", "other")
    for col in columns:
        table.add_column(col, justify="left" if col == "build" else "right")
    for r in rows:
        s = r["steps_s"]
        table.add_row(f"{r['project']} -t {r['target']}", f"{r['wall_s']:.1f}", f"{r['goal_s']:.0f}", f"{r['ratio']:.2f}x",
                      *(f"{s[k]:.1f}" for k in ("load", "capture", "compress", "int8_choices", "export", "verify")),
                      f"{r['other_s']:.1f}")
    Console(width=160).print(table)
    print("seconds per step from each manifest's timings_s (export and verify summed over the target's artifacts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
