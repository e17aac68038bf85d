"""fp32 vs int8 per format on emulated and estimated ARM devices, for digits and MobileNetV2.

    PYTHONPATH=. .venv/bin/python bench/devices.py [--models digits,mobilenet_v2] [--json out.json]

Per model: builds one target with all six (format, precision) artifacts (verified on the
sample's evaluation split), then per artifact:

- size, top-1 agreement with the fp32 torch model, host p50 (batch 1, one thread);
- guest instructions per inference under qemu (LiteRT/ONNX Runtime/ExecuTorch with their
  XNNPACK kernels, one thread) on every qemu CPU model the shipped profiles name, counted
  twice on cortex-a53 and neoverse-n1 to show the count is identical run to run;
- the estimated latency on every shipped profile (devices/estimate.py: an estimate, not a
  measurement) and the int8-slower-than-fp32 warnings.

Needs the emulated environment (`edgepack devices setup`, or the first run prepares it).
MobileNetV2 needs scikit-image for its photos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack import api  # noqa: E402
from edgepack.config.loader import profiles_catalog  # noqa: E402
from edgepack.devices import estimate as est  # noqa: E402
from edgepack.devices.costs import model_costs  # noqa: E402
from edgepack.devices.qemu import QemuRunner  # noqa: E402

FORMATS = ("tflite", "executorch", "onnx")
PRECISIONS = ("fp32", "int8")
PROFILES = ("cortex-a53-iot", "raspberry-pi-4", "raspberry-pi-5", "pixel-7", "graviton2")
REPEATED = ("cortex-a53", "neoverse-n1")   # counted twice: the determinism check
TARGET = """
name = "bench-devices"
device = "raspberry-pi-4"
[budgets]
max_accuracy_drop_pt = 100.0
""" + "".join(f'[[artifacts]]\nformat = "{f}"\nprecision = "{p}"\n' for f in FORMATS for p in PRECISIONS)


def build_all(sample: Path, dist: Path, iterations: int):
    (dist.parent / "targets").mkdir(exist_ok=True)
    (dist.parent / "targets" / "bench-devices.toml").write_text(TARGET)
    plan = api.make_plan(sample, targets=["bench-devices"], output_dir=dist, target_dirs=[dist.parent / "targets"])
    build = plan.project.build.model_copy(update={"iterations": iterations, "warmup": 5})
    plan = dataclasses.replace(plan, project=plan.project.model_copy(update={"build": build}))
    result = api.build(plan, progress=lambda m: print(f"  {m}", file=sys.stderr))
    target = result.targets[0]
    return plan, target.manifest, (target.dist or target.rejected)


def count(profile, artifact: Path, fmt: str, x: np.ndarray) -> dict:
    # One warm-up and one counted inference: the count is exact, so more iterations only
    # cost emulation time.
    run = QemuRunner(profile, count_instructions=True).run(artifact, fmt, x, warmup=1, iterations=1, threads=1)
    return run.instructions


def bench_model(name: str, iterations: int, console: Console) -> dict:
    sample = REPO / "samples" / name
    catalog = profiles_catalog()
    profiles = {p: catalog.load(p) for p in PROFILES}
    cpus = sorted({p.qemu_cpu for p in profiles.values()} | set(REPEATED))
    cpu_profile = {cpu: next((p for p in profiles.values() if p.qemu_cpu == cpu), None) for cpu in cpus}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        plan, manifest, folder = build_all(sample, tmp / "dist", iterations)
        build_s = time.perf_counter() - started
        from edgepack.sources.data import load_split
        from edgepack.sources.pytorch import load_source

        source = load_source(plan.project_dir, plan.project)
        example = np.zeros(plan.project.model.input_shape, np.float32)
        costs = model_costs(source.module, example)
        x = load_split(plan.project_dir, plan.project, "evaluation").x[0][:1]   # the samples take one input
        arts = {(a["format"], a["precision"]): a for a in manifest["artifacts"]}
        jobs = []
        for (fmt, prec), a in arts.items():
            for cpu in cpus:
                for repeat in range(2 if cpu in REPEATED else 1):
                    prof = cpu_profile[cpu] or profiles["raspberry-pi-4"].model_copy(update={"qemu_cpu": cpu})
                    jobs.append(((fmt, prec, cpu, repeat), prof, folder / a["file"], fmt))
        started = time.perf_counter()
        print(f"  counting instructions: {len(jobs)} emulated runs", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip([j[0] for j in jobs], pool.map(lambda j: count(j[1], j[2], j[3], x), jobs)))
        count_s = time.perf_counter() - started

    rows = []
    for fmt in FORMATS:
        for prec in PRECISIONS:
            a = arts[(fmt, prec)]
            row = {
                "format": fmt, "precision": prec, "size_bytes": a["size_bytes"], "agreement": a["agreement"],
                "host_p50_ms": a["latency_ms"]["p50"],
                "instructions": {cpu: counts[(fmt, prec, cpu, 0)]["per_inference"] for cpu in cpus},
                "identical_on_repeat": {cpu: counts[(fmt, prec, cpu, 0)]["window"] == counts[(fmt, prec, cpu, 1)]["window"]
                                        for cpu in REPEATED},
                "dotprod": {cpu: counts[(fmt, prec, cpu, 0)]["dotprod_per_inference"] for cpu in cpus},
                "simd_fp_share": {cpu: round(counts[(fmt, prec, cpu, 0)]["simd_fp_share"], 3) for cpu in cpus},
            }
            moved = est.bytes_moved(weight_bytes=a["size_bytes"], activation_elements=costs.activation_elements,
                                    activation_bytes_per_element=est.activation_bytes_per_element(prec))
            row["estimates"] = {
                p: est.estimate_latency(prof, instructions_per_inference=row["instructions"][prof.qemu_cpu],
                                        counted_on=prof.qemu_cpu, bytes_moved=moved, precision=prec).as_dict()
                for p, prof in profiles.items()
            }
            rows.append(row)
    by = {(r["format"], r["precision"]): r for r in rows}
    warnings = {}
    for fmt in FORMATS:
        f32, i8 = by[(fmt, "fp32")], by[(fmt, "int8")]
        for p, prof in profiles.items():
            cpu = prof.qemu_cpu
            w = est.int8_slower_warnings(prof, fp32_instructions=f32["instructions"][cpu], int8_instructions=i8["instructions"][cpu],
                                         int8_dotprod=i8["dotprod"][cpu], int8_mmla=counts[(fmt, "int8", cpu, 0)]["mmla_per_inference"])
            if w:
                warnings[f"{fmt} on {p}"] = w
    doc = {"model": name, "costs": costs.as_dict(), "evaluated_samples": manifest["evaluation"]["samples"],
           "build_seconds": round(build_s, 1), "count_seconds": round(count_s, 1), "emulated_runs": len(jobs),
           "host_iterations": iterations, "rows": rows, "int8_warnings": warnings}
    print_tables(doc, console)
    return doc


def print_tables(doc: dict, console: Console) -> None:
    rows = doc["rows"]
    by = {(r["format"], r["precision"]): r for r in rows}
    c = doc["costs"]
    t = Table(title=f"{doc['model']}: fp32 vs int8 ({c['macs'] / 1e6:.1f}M MACs, {c['parameters'] / 1e6:.2f}M parameters; "
                    f"agreement = top-1 agreement with torch fp32 on {doc['evaluated_samples']} inputs; host p50 of "
                    f"{doc['host_iterations']} runs, 1 thread; instructions per inference under qemu, 1 thread)")
    cols = ["format", "prec", "size", "agree", "host p50", "int8/fp32 host", "insn a53", "int8/fp32 a53", "a53 x2 same",
            "insn n1", "int8/fp32 n1", "n1 x2 same", "SDOT/inf n1"]
    cols += [f"est {p}" for p in PROFILES]
    for col in cols:
        t.add_column(col, justify="left" if col in ("format", "prec") else "right")
    for r in rows:
        f32 = by[(r["format"], "fp32")]
        int8 = r["precision"] == "int8"
        t.add_row(
            r["format"], r["precision"], f"{r['size_bytes'] / 1e6:.2f} MB", f"{r['agreement'] * 100:.1f}%",
            f"{r['host_p50_ms']:.3f} ms",
            f"{r['host_p50_ms'] / f32['host_p50_ms']:.2f}x" if int8 else "",
            f"{r['instructions']['cortex-a53'] / 1e6:.2f}M",
            f"{r['instructions']['cortex-a53'] / f32['instructions']['cortex-a53']:.2f}x" if int8 else "",
            "yes" if r["identical_on_repeat"]["cortex-a53"] else "NO",
            f"{r['instructions']['neoverse-n1'] / 1e6:.2f}M",
            f"{r['instructions']['neoverse-n1'] / f32['instructions']['neoverse-n1']:.2f}x" if int8 else "",
            "yes" if r["identical_on_repeat"]["neoverse-n1"] else "NO",
            f"{r['dotprod']['neoverse-n1'] / 1e6:.2f}M",
            *[f"~{r['estimates'][p]['estimate_ms']:.2f} ms" for p in PROFILES],
        )
    console.print(t)
    console.print(f"estimates: {est.METHOD}; 1 thread on each profile's fastest cluster, no device calibration.")
    for key, ws in doc["int8_warnings"].items():
        for w in ws:
            console.print(f"  int8 warning ({key}): {w}")
    console.print(f"build {doc['build_seconds']} s; {doc['emulated_runs']} emulated runs in {doc['count_seconds']} s\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mobilenet_v2")
    parser.add_argument("--iterations", type=int, default=50, help="host timing runs per artifact")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    console = Console(width=260)
    docs = [bench_model(m, args.iterations, console) for m in args.models.split(",")]
    if args.json:
        args.json.write_text(json.dumps({"schema": "edgepack.bench.devices/1", "models": docs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
