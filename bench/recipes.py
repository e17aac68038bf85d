"""Compression recipes side by side, measured in one run: fp32 baseline, int8 only,
structured pruning 50% + distillation + int8, and the compact preset, per sample.

    .venv/bin/python bench/recipes.py [--samples digits fashion] [--json]

Per row: parameters and MACs of the model that is exported, artifact size per format
(LiteRT / ExecuTorch / ONNX), the worst int8 size against the fp32 artifacts, the lowest
accuracy across the three formats and its drop against the fp32 reference, and the host
p50 per format (batch 1, one thread). Goals from the recipes issue, for digits: the full
recipe at <= 0.12x the fp32 size, <= 0.5x the MACs, <= 1.0 pt accuracy drop.
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
from edgepack.compress.engine import StageBudgetError  # noqa: E402

FP32_TARGET = """
name = "bench-fp32"
device = "pixel-7"
[budgets]
max_accuracy_drop_pt = 100.0
""" + "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "fp32"\n' for f in ("tflite", "executorch", "onnx"))
INT8_TARGET = FP32_TARGET.replace("bench-fp32", "bench-int8").replace('"fp32"', '"int8"')

CONFIGS = {
    "digits": [("fp32 baseline", "bench-fp32", None), ("int8 only", "bench-int8", "int8"),
               ("prune 50% + distill + int8", "bench-int8", "prune-distill-int8"), ("compact", "bench-int8", "compact")],
    "fashion": [("fp32 baseline", "bench-fp32", None), ("int8 only", "bench-int8", "int8"),
                ("prune 50% + distill + int8", "bench-int8", "prune-distill-int8"), ("compact", "bench-int8", "compact"),
                ("ensemble-compact (teacher)", "bench-int8", "ensemble-compact")],
}


def run_config(sample: str, target: str, recipe: str | None, tmp: Path, iterations: int) -> dict:
    plan = api.make_plan(REPO / "samples" / sample, targets=[target], output_dir=tmp / "dist" / sample,
                         target_dirs=[tmp / "targets"], recipe=recipe)
    build = plan.project.build.model_copy(update={"iterations": iterations, "warmup": 50})
    plan = dataclasses.replace(plan, project=plan.project.model_copy(update={"build": build}))
    result = api.build(plan, progress=lambda m: print(f"  [{sample} {recipe or 'fp32'}] {m}", file=sys.stderr))
    return result.targets[0].manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=["digits", "fashion"], choices=sorted(CONFIGS))
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "targets").mkdir()
        (tmp / "targets" / "bench-fp32.toml").write_text(FP32_TARGET)
        (tmp / "targets" / "bench-int8.toml").write_text(INT8_TARGET)
        for sample in args.samples:
            rows = []
            for label, target, recipe in CONFIGS[sample]:
                try:
                    m = run_config(sample, target, recipe, tmp, args.iterations)
                except StageBudgetError as e:  # a recipe that breaks its budget is a result too
                    last = e.rows[-1].as_dict()
                    rows.append({"config": label, "recipe": recipe, "failed": str(e), "parameters": last["parameters"],
                                 "macs": last["macs"], "stage_accuracy": last["accuracy"],
                                 "stage_seconds": sum(r.seconds for r in e.rows)})
                    continue
                arts = {a["format"]: a for a in m["artifacts"]}
                last = m["stages"][-1]
                rows.append({"config": label, "recipe": recipe, "parameters": last["parameters"], "macs": last["macs"],
                             "sizes": {f: arts[f]["size_bytes"] for f in ("tflite", "executorch", "onnx")},
                             "accuracy": {f: arts[f]["accuracy"] for f in arts},
                             "reference_accuracy": m["evaluation"]["reference_accuracy"],
                             "p50_ms": {f: arts[f]["latency_ms"]["p50"] for f in arts},
                             "stage_seconds": sum(s["seconds"] for s in m["stages"])})
            base = rows[0]
            for r in rows:
                if "failed" in r:
                    r["macs_ratio"] = r["macs"] / base["macs"]
                    continue
                r["size_ratio"] = max(r["sizes"][f] / base["sizes"][f] for f in r["sizes"])
                r["macs_ratio"] = r["macs"] / base["macs"]
                r["drop_pt"] = (r["reference_accuracy"] - min(r["accuracy"].values())) * 100
            out[sample] = rows
    if args.json:
        print(json.dumps({"schema": "edgepack.bench.recipes/1", "iterations": args.iterations, "samples": out}, indent=2))
        return 0
    console = Console(width=220)
    for sample, rows in out.items():
        table = Table(title=f"{sample}: recipes side by side (reference fp32 accuracy {rows[0]['reference_accuracy'] * 100:.2f}%; "
                            f"host p50 of {args.iterations} runs, batch 1, 1 thread)")
        for col in ("config", "params", "MACs", "MACs vs fp32", "tflite", "pte", "onnx", "worst size vs fp32",
                    "min accuracy", "drop", "p50 tflite / pte / onnx", "compress time"):
            table.add_column(col, justify="left" if col == "config" else "right")
        for r in rows:
            if "failed" in r:
                table.add_row(r["config"], f"{r['parameters']:,}", f"{r['macs']:,}", f"{r['macs_ratio']:.2f}x", "-", "-", "-", "-",
                              f"{r['stage_accuracy'] * 100:.2f}% (torch, validation)", "over budget", "-",
                              f"{r['stage_seconds']:.0f} s")
                continue
            table.add_row(
                r["config"], f"{r['parameters']:,}", f"{r['macs']:,}", f"{r['macs_ratio']:.2f}x",
                *(f"{r['sizes'][f]:,}" for f in ("tflite", "executorch", "onnx")), f"{r['size_ratio']:.3f}x",
                f"{min(r['accuracy'].values()) * 100:.2f}%", f"{r['drop_pt']:+.2f} pt",
                " / ".join(f"{r['p50_ms'][f] * 1000:.0f}" for f in ("tflite", "executorch", "onnx")) + " us",
                f"{r['stage_seconds']:.0f} s")
        console.print(table)
        for r in rows:
            if "failed" in r:
                console.print(f"{r['config']}: {r['failed']}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
