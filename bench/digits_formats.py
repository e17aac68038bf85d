"""fp32 vs int8 for every format on the digits sample, measured side by side in one run.

    .venv/bin/python bench/digits_formats.py [--iterations 2000] [--json]

Builds one target holding all six (format, precision) artifacts, verifies each on the
540-image test split in its own runtime, times each on the host (batch 1, one thread,
p50 of N runs after warm-up), and prints per format: int8/fp32 size ratio, accuracy and
drop against the torch fp32 reference, and the int8/fp32 host latency ratio. The goals
come from the foundation issue: int8 <= 0.30x the fp32 size, accuracy drop <= 0.5 pt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack import api  # noqa: E402

SIZE_GOAL = 0.30
DROP_GOAL_PT = 0.5
TARGET = """
name = "bench-all"
device = "pixel-7"
[budgets]
max_accuracy_drop_pt = 100.0
""" + "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f in ("tflite", "executorch", "onnx") for p in ("fp32", "int8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "targets").mkdir()
        (tmp / "targets" / "bench-all.toml").write_text(TARGET)
        plan = api.make_plan(REPO / "samples" / "digits", targets=["bench-all"], output_dir=tmp / "dist",
                             target_dirs=[tmp / "targets"])
        build = plan.project.build.model_copy(update={"iterations": args.iterations, "warmup": 100})
        plan = dataclasses.replace(plan, project=plan.project.model_copy(update={"build": build}))
        result = api.build(plan, progress=lambda m: print(f"  {m}", file=sys.stderr))
    manifest = result.targets[0].manifest
    by = {(a["format"], a["precision"]): a for a in manifest["artifacts"]}
    rows = []
    for fmt in ("tflite", "executorch", "onnx"):
        fp32, int8 = by[(fmt, "fp32")], by[(fmt, "int8")]
        rows.append({
            "format": fmt,
            "fp32_bytes": fp32["size_bytes"], "int8_bytes": int8["size_bytes"],
            "size_ratio": int8["size_bytes"] / fp32["size_bytes"],
            "fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"],
            "int8_drop_pt": int8["accuracy_drop_pt"], "int8_agreement": int8["agreement"], "int8_snr_db": int8["snr_db"],
            "fp32_p50_ms": fp32["latency_ms"]["p50"], "int8_p50_ms": int8["latency_ms"]["p50"],
            "latency_ratio": int8["latency_ms"]["p50"] / fp32["latency_ms"]["p50"],
        })
    if args.json:
        print(json.dumps({"schema": "edgepack.bench.digits-formats/1", "reference_accuracy": manifest["evaluation"]["reference_accuracy"],
                          "iterations": args.iterations, "rows": rows}, indent=2))
        return 0
    table = Table(title=f"digits, fp32 vs int8 per format (reference torch fp32 accuracy {manifest['evaluation']['reference_accuracy'] * 100:.2f}%, "
                        f"{manifest['evaluation']['samples']} test images; host p50 of {args.iterations} runs, batch 1, 1 thread)")
    for col in ("format", "fp32 size", "int8 size", "int8/fp32 size", f"<= {SIZE_GOAL}x", "fp32 acc", "int8 acc", "int8 drop",
                f"<= {DROP_GOAL_PT} pt", "agree", "fp32 p50", "int8 p50", "int8/fp32 latency"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in rows:
        table.add_row(
            r["format"], f"{r['fp32_bytes']:,}", f"{r['int8_bytes']:,}", f"{r['size_ratio']:.3f}x",
            "yes" if r["size_ratio"] <= SIZE_GOAL else "NO",
            f"{r['fp32_accuracy'] * 100:.2f}%", f"{r['int8_accuracy'] * 100:.2f}%", f"{r['int8_drop_pt']:+.2f} pt",
            "yes" if r["int8_drop_pt"] <= DROP_GOAL_PT else "NO", f"{r['int8_agreement'] * 100:.1f}%",
            f"{r['fp32_p50_ms'] * 1000:.1f} us", f"{r['int8_p50_ms'] * 1000:.1f} us", f"{r['latency_ratio']:.2f}x",
        )
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
