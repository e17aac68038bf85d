"""ONNX Runtime's int8 choices judged on the kernels that will run them, side by side.

    .venv/bin/python bench/onnx_int8_choices.py [--samples digits fashion mobilenet_v2] [--json]

For each sample: export the source model to fp32 ONNX, quantize it with each of ONNX
Runtime's static-quantization choices (signed or unsigned activations, reduce_range,
symmetric activations), then run every file on the sample's evaluation inputs
  - on the pixel-7's Cortex-A76 and a Cortex-A53 under qemu-user, with onnxruntime's
    aarch64 build (the kernels a phone or board runs: the verdict),
  - on this x86 host with exact int8 kernels (edgepack's host pre-check),
  - on an emulated x86 CPU without VNNI (qemu-x86_64 -cpu Haswell) with ONNX Runtime's
    default session options (what a plain x86 check would report on such a host),
and prints logit SNR against the fp32 model and top-1 agreement per place. Calibration
is the sample's own calibration split, min-max ranges, per-channel symmetric weights,
QDQ format: only the listed choice changes from row to row.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.config.loader import profiles_catalog  # noqa: E402
from edgepack.devices.host import HostRunner  # noqa: E402
from edgepack.devices.qemu import QemuRunner  # noqa: E402
from edgepack.plan import make_plan  # noqa: E402
from edgepack.pipeline.load import load  # noqa: E402

# name -> (activation type, reduce_range, symmetric activations)
CHOICES = {
    "S8S8 (edgepack)": ("int8", False, False),
    "U8S8": ("uint8", False, False),
    "U8S8 reduce_range": ("uint8", True, False),
    "S8S8 symmetric act.": ("int8", False, True),
}
DEVICES = {"cortex-a76 (pixel-7)": "pixel-7", "cortex-a53": "cortex-a53-iot"}
NO_VNNI_CPU = "Haswell"

DEFAULT_KERNELS_PROBE = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
name = s.get_inputs()[0].name
np.save(sys.argv[3], np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]))
"""


def quantize(fp32: Path, out: Path, calibration: np.ndarray, activation: str, reduce_range: bool, symmetric: bool):
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    class Batches(CalibrationDataReader):
        def __init__(self, name):
            self.name = name
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter({self.name: calibration[i : i + 1]} for i in range(len(calibration)))

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    name = onnx.load_model(str(pre), load_external_data=False).graph.input[0].name
    quantize_static(str(pre), str(out), calibration_data_reader=Batches(name), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if activation == "int8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    pre.unlink()


def scores(reference: np.ndarray, out: np.ndarray) -> dict:
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - out) ** 2))
    snr = float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)
    return {"snr_db": round(snr, 2), "agreement": round(float(np.mean(ref.argmax(1) == out.argmax(1))), 4)}


def run_sample(sample: str, work: Path, say) -> list[dict]:
    plan = make_plan(REPO / "samples" / sample, targets=["android"], output_dir=work / "dist")
    loaded = load(plan, say)
    # The samples are one-input classifiers: their input and their logits.
    x = np.ascontiguousarray(loaded.evaluation.x[0], dtype=np.float32)
    reference = np.asarray(loaded.original_outputs[0], dtype=np.float32)
    calibration = np.ascontiguousarray(loaded.calibration_x[0], dtype=np.float32)
    fp32 = work / f"{sample}.fp32.onnx"
    from edgepack.exporters.onnx import export_fp32

    export_fp32(loaded.source.module.eval(), (x[:1],), fp32, input_names=("input",), output_names=("output",))
    np.save(work / "inputs.npy", x, allow_pickle=False)
    rows = []
    for label, (activation, reduce_range, symmetric) in CHOICES.items():
        say(f"{sample}: {label}")
        path = work / f"{sample}.{activation}.{int(reduce_range)}{int(symmetric)}.onnx"
        quantize(fp32, path, calibration, activation, reduce_range, symmetric)
        row = {"sample": sample, "choice": label, "samples": int(len(x))}
        for place, profile in DEVICES.items():
            run = QemuRunner(profiles_catalog().load(profile)).run(path, "onnx", x, warmup=0, iterations=1, threads=1)
            row[place] = scores(reference, run.outputs)
        row["x86 exact (host)"] = scores(reference, HostRunner().run(path, "onnx", x, warmup=0, iterations=1, threads=1).outputs)
        if shutil.which("qemu-x86_64"):
            out = work / "default.npy"
            subprocess.run(["qemu-x86_64", "-cpu", NO_VNNI_CPU, sys.executable, "-c", DEFAULT_KERNELS_PROBE, str(path),
                            str(work / "inputs.npy"), str(out)], check=True, capture_output=True, timeout=3600)
            row["x86 no-VNNI default"] = scores(reference, np.load(out))
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=["digits", "fashion", "mobilenet_v2"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)
    rows = []
    for sample in args.samples:
        with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
            rows += run_sample(sample, Path(tmp), lambda m: console.print(m, highlight=False))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    places = [p for p in (*DEVICES, "x86 exact (host)", "x86 no-VNNI default") if any(p in r for r in rows)]
    table = Table(title="ONNX int8 choices: logit SNR dB / top-1 agreement vs fp32, per place the file ran")
    for col in ("sample", "choice", *places):
        table.add_column(col, justify="left" if col in ("sample", "choice") else "right")
    for r in rows:
        table.add_row(r["sample"], r["choice"],
                      *(f"{r[p]['snr_db']:.1f} / {100 * r[p]['agreement']:.1f}%" if p in r else "-" for p in places))
    Console(width=150).print(table)
    counts = sorted({f"{r['sample']} {r['samples']}" for r in rows})
    print("evaluation inputs per sample: " + ", ".join(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
