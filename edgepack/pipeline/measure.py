"""Step `measure`: an artifact run on a device runner (emulated aarch64, a board over ssh,
a phone over adb, or the host), its outputs checked against the reference, and the
latency estimate for the device profile derived from what the run counted.

`edgepack build --runner qemu` and `edgepack profile` both go through `measure_on`, so a
row means the same whichever command wrote it:

- method "measured":  wall-clock timings of a real CPU (host, ssh, adb)
- method "emulated":  a qemu run: parity and instruction counts, wall time kept only as
                      `emulated_wall_p50_ms` (emulation is not latency: p50_ms is null)
- method "estimated": a latency estimate for the device from the emulated instruction count
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.release.manifest_model import MEASUREMENT, Emulated, Estimated, Measured

# Statistics of a timed loop; under emulation they describe qemu, not the device.
_LOOP_STATS = ("p50", "p90", "p99", "mean", "std")


@dataclass(frozen=True)
class DeviceRun:
    """What one run on a device gives: its measurement row, the estimate derived from it
    (under emulation on the device's own CPU model), and the run itself."""

    row: Measured | Emulated
    estimate: Estimated | None
    result: object                  # devices.base.RunResult


def run_row(result, device_name: str, *, reference, labels: np.ndarray | None = None,
            recorded=None, op_profile_note: str | None = None) -> Measured | Emulated:
    """A manifest `measurements` row from a runner's result. Parity is against the fp32
    reference (with accuracy when labels are known) and, where the build host's outputs
    were recorded, against those. Outputs, reference and recorded may be one array or a
    tuple in declared output order; the row's parity is of the first output."""
    from edgepack.verify.metrics import output_parity

    lat = result.latency_dict()
    emulated = bool(result.emulated_cpu)
    row = {"device": device_name, "method": "emulated" if emulated else "measured", **lat}
    if emulated:
        for k in _LOOP_STATS:
            row.pop(k, None)
        row.update(p50_ms=None, p90_ms=None, cpu=result.emulated_cpu, emulated_wall_p50_ms=round(result.p50_ms, 3))
    else:
        row.update(p50_ms=lat["p50"], p90_ms=lat["p90"])
    out = _first(result.outputs)
    reference, recorded = _first(reference), _first(recorded)
    if out is not None and reference is not None and out.shape == reference.shape:
        parity = output_parity(reference, out)
        if labels is not None and len(labels) == len(out):
            parity = {"accuracy": float(np.mean(out.argmax(1) == labels)), **parity}
        row["parity"] = parity
    if out is not None and recorded is not None and out.shape[1:] == recorded.shape[1:] and len(out) >= len(recorded):
        # The build host recorded its outputs on the first rows of the same inputs.
        diff = float(np.max(np.abs(out[: len(recorded)] - recorded)))
        row.setdefault("parity", {})["max_abs_diff_vs_build_host"] = diff
    if result.instructions:
        row["instructions"] = result.instructions
    if op_profile_note is not None:
        row["ops"] = result.ops or op_profile_note
    return MEASUREMENT.validate_python(row)


def _first(outputs):
    return outputs[0] if isinstance(outputs, tuple) else outputs


def measure_on(runner, device, *, path: Path, fmt: str, precision: str, inputs,
               reference, labels: np.ndarray | None = None, recorded=None,
               warmup: int, iterations: int, threads: int, activation_elements: int | None,
               calibration: Path | None, op_profile: bool = False, with_estimate: bool = True,
               delegate: str | None = None, input_names=None, output_names=None) -> DeviceRun:
    """`inputs`: one array, or with `input_names`/`output_names` the model's inputs as a
    tuple in declared order (devices.base.run_declared)."""
    """Run `path` on `runner` for `device`, and estimate its latency when the run counted
    instructions on the device's own emulated CPU. A build that shares one emulated run
    among several targets estimates per target instead (`with_estimate=False`)."""
    extra = {"op_profile": True} if op_profile else {}
    if delegate is not None:
        extra["delegate"] = delegate
    if input_names is not None:
        from edgepack.devices.base import run_declared

        result = run_declared(runner, path, fmt, inputs, input_names=input_names, output_names=output_names,
                              warmup=warmup, iterations=iterations, threads=threads, **extra)
    else:
        result = runner.run(path, fmt, inputs, warmup=warmup, iterations=iterations, threads=threads, **extra)
    row = run_row(result, device.name, reference=reference, labels=labels, recorded=recorded,
                  op_profile_note=f"not exposed by {fmt}'s runtime on the {runner.name} runner" if op_profile else None)
    estimate = estimate_from(result, device, artifact_bytes=path.stat().st_size, precision=precision,
                             activation_elements=activation_elements, threads=threads,
                             calibration=calibration, fmt=fmt) if with_estimate else None
    return DeviceRun(row=row, estimate=estimate, result=result)


def estimate_from(result, device, *, artifact_bytes: int, precision: str, activation_elements: int | None,
                  threads: int, calibration: Path | None, fmt: str) -> Estimated | None:
    """The estimated-latency row for `device` from a run's instruction count; None unless
    the run was emulated on the device's own CPU model (an estimate needs that count)."""
    from edgepack.devices.latency import estimate_row

    if not result.emulated_cpu:
        return None
    row = estimate_row(device, instructions=result.instructions, artifact_bytes=artifact_bytes, precision=precision,
                       activation_elements=activation_elements, threads=threads, calibration=calibration, fmt=fmt)
    return None if row is None else Estimated.model_validate(row)


def warnings_for(device, *, precision: str, export_details: dict | None, rows) -> list[str]:
    """Why an artifact may not pay off on `device`, from its export and, where an
    emulated run counted them, the instructions its kernels executed."""
    from edgepack.devices.latency import int8_warnings

    counted = next((r.instructions for r in rows if r.method == "emulated" and r.instructions), None)
    return int8_warnings(device, precision=precision, export_details=export_details,
                         instructions=counted.to_json() if counted else None)
