"""From a run to a latency estimate for a device, and back from a real-device
measurement to the calibration of that estimate. Build and profile share this."""

from __future__ import annotations

from pathlib import Path

from edgepack.config.schema import DeviceProfile


def estimate_row(device: DeviceProfile, *, instructions: dict | None, artifact_bytes: int, precision: str,
                 activation_elements: int | None, threads: int, project_dir: Path | None) -> dict | None:
    """A manifest `measurements` row holding the estimate, or None without a count from
    the device's own emulated CPU (an estimate needs one)."""
    from edgepack.devices.estimate import (activation_bytes_per_element, bytes_moved, estimate_latency,
                                           load_calibration)

    if not instructions or instructions.get("cpu") != device.qemu_cpu or not instructions.get("per_inference"):
        return None
    moved = bytes_moved(weight_bytes=artifact_bytes, activation_elements=activation_elements or 0,
                        activation_bytes_per_element=activation_bytes_per_element(precision))
    est = estimate_latency(device, instructions_per_inference=instructions["per_inference"], counted_on=device.qemu_cpu,
                           bytes_moved=moved, precision="int8" if precision == "int8" else "fp32", threads=threads,
                           calibration=load_calibration(device.name, project_dir=project_dir))
    d = est.as_dict()
    if activation_elements is None:
        d["notes"] = [*d["notes"], "activation traffic unknown (no build manifest): bytes moved counts the weights only"]
    return {"device": device.name, "method": "estimated", "runner": "estimate", "threads": est.threads,
            "p50_ms": round(est.estimate_ms, 4), "p90_ms": None, "label": est.label, "estimate": d}


def latency_gate(file: str, device: DeviceProfile, row: dict | None, budget_ms: float | None) -> list[str]:
    if budget_ms is None or row is None:
        return []
    if row["p50_ms"] > budget_ms:
        est = row["estimate"]
        return [f"{file} on {device.name}: estimated {row['p50_ms']:.2f} ms ({est['method']}; {est['bound']}-bound on "
                f"{est['core']}) exceeds the latency budget of {budget_ms:g} ms"]
    return []


def calibrate_from(device: DeviceProfile, *, file: str, measured_ms: float | None, previous_rows: list[dict],
                   runner: str) -> str | None:
    """Store a real-device p50 against the uncalibrated estimate recorded for the same
    artifact; later estimates for this profile use the ratio. Returns the file written."""
    from edgepack.devices.estimate import record_calibration

    est = next((r["estimate"] for r in previous_rows if r.get("method") == "estimated" and r.get("device") == device.name), None)
    if est is None or not measured_ms:
        return None
    uncalibrated = est["estimate_ms"] / (est.get("calibration_factor") or 1.0)
    cal = record_calibration(device.name, artifact=file, measured_ms=measured_ms, estimated_ms=uncalibrated, runner=runner)
    return str(cal.path)


def delegated_share(export_details: dict | None) -> float | None:
    """Share of an ExecuTorch program's compute nodes inside the XNNPACK delegate (the
    exporter records both counts); None for formats whose converter does not report it."""
    details = export_details or {}
    inside = details.get("delegated_nodes")
    if inside is None:
        return None
    outside = sum((details.get("non_delegated_ops") or {}).values())
    return inside / (inside + outside) if inside + outside else None


def int8_warnings(device: DeviceProfile, *, precision: str, export_details: dict | None = None,
                  instructions: dict | None = None) -> list[str]:
    """Why an int8 artifact may not beat fp32 on `device`: the profile's ISA, ops left out
    of the delegate, and (under emulation) whether the dot-product kernels ran at all."""
    from edgepack.devices.estimate import int8_slower_warnings

    if not precision.startswith("int8"):
        return []
    counted = instructions if instructions and instructions.get("cpu") == device.qemu_cpu else {}
    return int8_slower_warnings(device, int8_dotprod=counted.get("dotprod_per_inference"),
                                int8_mmla=counted.get("mmla_per_inference"),
                                delegated_share=delegated_share(export_details))
