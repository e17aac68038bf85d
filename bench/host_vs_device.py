"""int8 parity on the build host and on the device's emulated aarch64 CPU, side by side.

    .venv/bin/python bench/host_vs_device.py [--samples digits fashion mobilenet_v2] [--json]

Builds each sample for android with `--runner qemu` (every artifact runs on the host
and on the pixel-7's CPU model under qemu-user, with the runtimes' aarch64 builds) and
prints per sample and format: the host's agreement and SNR against the fp32 model, the
same on emulated aarch64, and the largest output difference between the two runs against
the release tolerance (`test_vectors.outputs[].atol`: two output quantization steps). The
device's kernels are the authority; the host run is the pre-check, and this shows how far
apart the two are. mobilenet_v2 takes the longest: each of its 280 evaluation images runs
under emulation, in every format.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack import api  # noqa: E402


def _row(sample: str, folder: Path, artifact: dict, manifest: dict) -> dict:
    emulated = next(m for m in artifact["measurements"] if m["method"] == "emulated")
    vectors = manifest["test_vectors"]
    recorded = np.load(folder / vectors["outputs"][artifact["file"]]["file"])
    return {
        "sample": sample, "format": artifact["format"], "precision": artifact["precision"],
        "host_agreement": artifact["agreement"], "host_snr_db": artifact["snr_db"],
        "device_cpu": emulated["cpu"], "device_agreement": emulated["parity"]["agreement"],
        "device_snr_db": emulated["parity"]["snr_db"], "samples": emulated["parity"]["samples"],
        # The build records the host's outputs on the first test vectors; the emulated run
        # covered the whole split, so the comparison is on the recorded rows' count.
        "recorded_rows": int(len(recorded)),
        "atol": vectors["outputs"][artifact["file"]]["atol"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=["digits", "fashion", "mobilenet_v2"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in args.samples:
            plan = api.make_plan(REPO / "samples" / sample, targets=["android"], output_dir=Path(tmp) / sample,
                                 runner="qemu")
            result = api.build(plan, progress=lambda m, s=sample: print(f"  {s}: {m}", file=sys.stderr))
            target = result.targets[0]
            folder = target.dist or target.rejected
            for artifact in target.manifest["artifacts"]:
                rows.append(_row(sample, folder, artifact, target.manifest))
                # The emulated run's own outputs against the host's recorded ones.
                rows[-1]["max_abs_diff_vs_host"] = next(
                    m["parity"].get("max_abs_diff_vs_build_host") for m in artifact["measurements"]
                    if m["method"] == "emulated")
    if args.json:
        print(json.dumps({"schema": "edgepack.bench.host-vs-device/1", "rows": rows}, indent=2))
        return 0
    table = Table(title="int8 parity against the fp32 model: build host vs the device's emulated aarch64 CPU (android, pixel-7)")
    for col in ("sample", "format", "host agree", "host SNR dB", "device agree", "device SNR dB", "max |host-device|", "atol", "within"):
        table.add_column(col, justify="left" if col in ("sample", "format") else "right")
    for r in rows:
        diff = r["max_abs_diff_vs_host"]
        table.add_row(r["sample"], r["format"], f"{r['host_agreement'] * 100:.1f}%", _db(r["host_snr_db"]),
                      f"{r['device_agreement'] * 100:.1f}%", _db(r["device_snr_db"]),
                      "-" if diff is None else f"{diff:.3g}", f"{r['atol']:.3g}",
                      "-" if diff is None else ("yes" if diff <= r["atol"] else "NO"))
    Console(width=200).print(table)
    return 0


def _db(v) -> str:
    return "exact" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    sys.exit(main())
