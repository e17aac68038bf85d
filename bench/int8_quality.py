"""How close int8 stays to fp32, per calibration method and with cross-layer equalization
and bias correction, for every sample and format, side by side in one run.

    .venv/bin/python bench/int8_quality.py [--samples digits,fashion,mobilenet_v2]
                                           [--formats tflite,executorch,onnx] [--json]

Each sample is loaded once; every variant is exported through the build's own export
step (edgepack.pipeline.export) and run on the sample's whole evaluation split in its
runtime on this host, exactly as `edgepack build` verifies it. Each cell is top-1
agreement with the fp32 model and logit SNR against it (what the build prints).

Variants: each calibration method alone; "before" (what edgepack did before calibration
became an option: onnxruntime MinMax for ONNX, torchao's HistogramObserver, i.e. mse, for
the PT2E formats; the same artifacts as those columns, not re-exported); and the stage's
default method with equalize, bias_correction, and both. mobilenet_v2 needs its weights
(samples/mobilenet_v2/prepare.py) and several minutes per format.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _machine import describe as describe_machine  # noqa: E402  (bench/, this script's folder)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

METHODS = ("minmax", "percentile", "entropy", "mse")
BEFORE = {"onnx": "minmax", "tflite": "mse", "executorch": "mse"}
REWRITES = {"cle": {"equalize": True, "bias_correction": False}, "bc": {"equalize": False, "bias_correction": True},
            "cle+bc": {"equalize": True, "bias_correction": True}}



def measure_sample(sample: str, formats: list[str], rewrites: list[str], say) -> list[dict]:
    from edgepack import api
    from edgepack._quiet import quiet_toolchains
    from edgepack.compress.quantize_stage import QuantizeConfig
    from edgepack.devices.host import HostRunner
    from edgepack.pipeline import export as export_step
    from edgepack.pipeline import verify as verify_step
    from edgepack.pipeline.compress import compress
    from edgepack.pipeline.load import load
    from edgepack.pipeline.records import ExportKey

    quiet_toolchains()
    plan = api.make_plan(REPO / "samples" / sample)
    loaded = load(plan, say)
    compressed = compress(plan, loaded, say)
    settings = plan.project.build.model_copy(update={"warmup": 0, "iterations": 1})
    default = QuantizeConfig()
    variants = {m: QuantizeConfig(calibration=m, equalize=False, bias_correction=False) for m in METHODS}
    variants.update({f"{default.calibration}+{r}": QuantizeConfig(**REWRITES[r]) for r in rewrites})
    rows = []
    with tempfile.TemporaryDirectory() as workspace:
        workspace = Path(workspace)
        for name, config in variants.items():
            variant_plan = dataclasses.replace(plan, recipe=dataclasses.replace(plan.recipe, quantize=config))
            rewritten = export_step.rewrite_for_int8(variant_plan, compressed.model, loaded, say)
            for fmt in formats:
                say(f"{sample}: {fmt} {name}")
                start = time.perf_counter()
                key = ExportKey(fmt, "int8", (), export_step.quantization_key("int8", config))
                artifact = export_step.export(variant_plan, key, file_name=f"{sample}.{fmt}", model=compressed.model,
                                              loaded=loaded, dims=(), workspace=workspace, say=say, rewritten=rewritten)
                verified = verify_step.verify(HostRunner(), artifact, fmt=fmt, precision="int8", loaded=loaded,
                                              compressed=compressed, dims=(), model=compressed.model,
                                              interface=plan.project.model, settings=settings, say=say)
                p = verified.parity
                rows.append({"sample": sample, "format": fmt, "variant": name, "agreement": p.agreement,
                             "snr_db": None if p.snr_db == float("inf") else round(p.snr_db, 2),
                             "samples": p.samples, "seconds": round(time.perf_counter() - start, 1),
                             "rewrites": {k: v for k, v in artifact.details.items() if k in ("equalization", "bias_correction")}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="digits,fashion,mobilenet_v2")
    parser.add_argument("--formats", default="tflite,executorch,onnx")
    parser.add_argument("--rewrites", default="cle,bc,cle+bc", help="comma-separated subset of cle, bc, cle+bc ('' for none)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args()
    formats = args.formats.split(",")
    rewrites = [r for r in args.rewrites.split(",") if r]
    err = Console(stderr=True)
    started = time.perf_counter()
    rows, timing = [], {}
    for sample in args.samples.split(","):
        t = time.perf_counter()
        rows += measure_sample(sample, formats, rewrites, lambda m: err.print(f"  {m}", highlight=False))
        timing[sample] = round(time.perf_counter() - t, 1)
    doc = {"schema": "edgepack.bench.int8-quality/1", "machine": describe_machine(), "seconds": timing,
           "total_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    if args.save:
        args.save.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {(r["sample"], r["format"], r["variant"]): r for r in rows}
    table = Table(title="int8 vs fp32: top-1 agreement / logit SNR on each sample's evaluation split "
                        f"(host: {doc['machine']})")
    for col in ("sample", "format", "n", "before", *variants):
        table.add_column(col, justify="left" if col in ("sample", "format") else "right")

    def cell(r):
        return "-" if r is None else f"{r['agreement'] * 100:.1f}% / {r['snr_db']:.1f}"

    for sample in dict.fromkeys(r["sample"] for r in rows):
        for fmt in formats:
            first = by.get((sample, fmt, variants[0]))
            table.add_row(sample, fmt, str(first["samples"]) if first else "-", cell(by.get((sample, fmt, BEFORE[fmt]))),
                          *(cell(by.get((sample, fmt, v))) for v in variants))
    out = Console(width=250)
    out.print(table)
    for sample in timing:
        notes = next((r["rewrites"] for r in rows if r["sample"] == sample and r["rewrites"].get("equalization")), None)
        if notes:
            eq = notes["equalization"]
            out.print(f"{sample}: equalized {eq['pairs']} layer pairs ({eq['relu6_replaced']} ReLU6 -> ReLU, "
                      f"{len(eq['relu6_kept'])} kept), fp32 SNR after equalization "
                      f"{eq['fp32_snr_db'] if eq['fp32_snr_db'] is not None else 'inf'} dB")
    out.print("seconds per sample: " + ", ".join(f"{k} {v}" for k, v in timing.items()) + f"; total {doc['total_seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
