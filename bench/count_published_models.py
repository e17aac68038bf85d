"""Measure the instruction counts the latency fit divides by published timings.

Each architecture of the published tables (XNNPACK's and the slim MobileNetV3
checkpoints'; edgepack.devices.reference_models) is exported to LiteRT .tflite with
edgepack's own exporter (fp32, and static int8 where a published int8 row exists), then
run under qemu on an emulated CPU model with the instruction counter: guest
instructions per inference, one runtime thread. The counts are LiteRT+XNNPACK's for
every row, whatever runtime the row was published on.

    python bench/count_published_models.py export --out DIR
    python bench/count_published_models.py count MODEL PRECISION CPU --out DIR   # one count, DIR/counts/*.json
    python bench/count_published_models.py collect --out DIR                     # writes the data file

`collect` writes edgepack/devices/data/instruction_counts.toml from every count in DIR
(it replaces the file: DIR/counts must hold the rows to keep as well as the new ones).
Counting a MobileNet takes minutes under emulation: run counts in the background.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COUNTS_FILE = REPO / "edgepack" / "devices" / "data" / "instruction_counts.toml"
CALIBRATION_SAMPLES = 16


def artifact_path(out: Path, model: str, precision: str) -> Path:
    return out / "artifacts" / f"{model}-{precision}.tflite"


def export(out: Path, models: list[str], precisions: list[str]) -> None:
    from edgepack.devices.reference_models import INPUT_SHAPE, build
    from edgepack.exporters import ExportRequest, export as run_export

    rng = np.random.default_rng(0)
    example = rng.standard_normal(INPUT_SHAPE).astype(np.float32)
    calibration = rng.standard_normal((CALIBRATION_SAMPLES, *INPUT_SHAPE[1:])).astype(np.float32)
    for model in models:
        for precision in precisions:
            path = artifact_path(out, model, precision)
            if path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            try:
                art = run_export("tflite", ExportRequest(module=build(model), example=(example,), calibration=(calibration,),
                                                         precision=precision, out_path=path, input_names=("input",),
                                                         output_names=("logits",), parent_sha256=""))
            except Exception as e:  # reported, not fatal: one model failing must not stop the others
                print(f"{model} {precision}: export failed: {e}", flush=True)
                path.unlink(missing_ok=True)
                continue
            print(f"{model} {precision}: {art.size_bytes} bytes in {time.monotonic() - started:.0f} s", flush=True)


def count(out: Path, model: str, precision: str, cpu: str) -> dict:
    from edgepack.config.schema import CoreCluster, DeviceProfile
    from edgepack.devices.qemu import QemuRunner
    from edgepack.devices.reference_models import INPUT_SHAPE

    # The runner reads only the CPU model from a profile: a minimal one names it.
    profile = DeviceProfile(name=f"count-{cpu}", kind="board", isa="armv8-a", features=("neon",),
                            clusters=(CoreCluster(core=cpu, count=1, max_clock_ghz=1.0),), memory_gb=1,
                            memory_bandwidth_gbs=1, qemu_cpu=cpu)
    inputs = np.random.default_rng(1).standard_normal(INPUT_SHAPE).astype(np.float32)
    started = time.monotonic()
    result = QemuRunner(profile, count_instructions=True, timeout_s=3600).run(
        artifact_path(out, model, precision), "tflite", inputs, warmup=1, iterations=1, threads=1)
    row = {
        "model": model, "precision": precision, "runtime": "litert+xnnpack", "qemu_cpu": cpu, "threads": 1,
        "instructions": int(result.instructions["per_inference"]),
        "simd_fp_share": round(result.instructions["simd_fp_share"], 4),
        "measured": datetime.date.today().isoformat(),
        "seconds": round(time.monotonic() - started),
    }
    dest = out / "counts" / f"{model}-{precision}-{cpu}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(row, indent=2) + "\n")
    return row


def collect(out: Path) -> str:
    rows = sorted((json.loads(p.read_text()) for p in (out / "counts").glob("*.json")),
                  key=lambda r: (r["qemu_cpu"], r["model"], r["precision"]))
    from edgepack.devices.fit import COUNT_COMMAND

    lines = [
        "# Guest instructions per inference of the reference MobileNets (edgepack/devices/reference_models.py),",
        "# exported to .tflite by edgepack's LiteRT exporter and run by LiteRT with its XNNPACK delegate,",
        "# one thread, under qemu-aarch64 on the named CPU model with the instruction-count plugin",
        "# (edgepack.devices.qemu.QemuRunner, count_instructions=True; one warm-up, one counted inference).",
        "# Written by:",
        f"#   {COUNT_COMMAND}",
        f"# on {platform.machine()} Linux; the counts are exact and repeat from run to run.",
        "",
    ]
    for r in rows:
        lines += [
            "[[count]]",
            f'model = "{r["model"]}"',
            f'precision = "{r["precision"]}"',
            f'runtime = "{r["runtime"]}"',
            f'qemu_cpu = "{r["qemu_cpu"]}"',
            f'threads = {r["threads"]}',
            f'instructions = {r["instructions"]}',
            f'measured = "{r["measured"]}"',
            "",
        ]
    text = "\n".join(lines)
    COUNTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    COUNTS_FILE.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    from edgepack.devices.reference_models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    e.add_argument("--precisions", nargs="*", default=["fp32", "int8"], choices=["fp32", "int8"])
    c = sub.add_parser("count")
    c.add_argument("model", choices=MODELS)
    c.add_argument("precision", choices=["fp32", "int8"])
    c.add_argument("cpu")
    sub.add_parser("collect")
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "export":
        export(args.out, args.models, args.precisions)
    elif args.cmd == "count":
        if not artifact_path(args.out, args.model, args.precision).is_file():
            print(f"no artifact {artifact_path(args.out, args.model, args.precision)}; run `export` first", file=sys.stderr)
            return 2
        print(json.dumps(count(args.out, args.model, args.precision, args.cpu)))
    else:
        print(collect(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
