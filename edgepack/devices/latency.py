"""From a run to a latency estimate for a device, and back from a real-device
measurement to the calibration of that estimate. Build and profile share this.

Calibration is an explicit input: a file the user names (`--latency-calibration FILE` on
build and profile, or `[build] latency_calibration` in edgepack.toml), kept per artifact
format, precision and thread count. A profile over ssh or
adb adds its measurements to that file; a build or an emulated profile reads it; nothing
is read from or written to a home or cache folder behind the user's back."""

from __future__ import annotations

from pathlib import Path

from edgepack.config.schema import DeviceProfile


def applies_to(calibration: Path | None, device: DeviceProfile) -> bool:
    """Whether the calibration file is for this device profile (a build of several
    targets applies it to the targets on that profile only)."""
    from edgepack.devices.estimate import read_calibration_profile

    return calibration is not None and read_calibration_profile(calibration) == device.name


def calibration_record(calibration: Path | None, device: DeviceProfile) -> dict | None:
    """The manifest's `latency_calibration`: the file applied to this device's estimates,
    by name and content hash, or None."""
    from edgepack.devices.estimate import calibration_sha256

    if not applies_to(calibration, device):
        return None
    return {"file": Path(calibration).name, "sha256": calibration_sha256(calibration)}


def estimate_row(device: DeviceProfile, *, instructions: dict | None, artifact_bytes: int, precision: str,
                 activation_elements: int | None, threads: int, calibration: Path | None = None,
                 fmt: str | None = "tflite") -> dict | None:
    """A manifest `measurements` row holding the estimate, or None without a count from
    the device's own emulated CPU (an estimate needs one). `calibration` is the file
    given by the user; it scales the estimate when it is for this device's profile."""
    from edgepack.devices.estimate import activation_bytes_per_element, bytes_moved, estimate_latency, load_calibration

    if not instructions or instructions.get("cpu") != device.qemu_cpu or not instructions.get("per_inference"):
        return None
    moved = bytes_moved(weight_bytes=artifact_bytes, activation_elements=activation_elements or 0,
                        activation_bytes_per_element=activation_bytes_per_element(precision))
    est = estimate_latency(device, instructions_per_inference=instructions["per_inference"], counted_on=device.qemu_cpu,
                           bytes_moved=moved, precision=precision, threads=threads, fmt=fmt,
                           calibration=load_calibration(device.name, path=calibration) if applies_to(calibration, device) else None)
    d = est.as_dict()
    if activation_elements is None:
        d["notes"] = [*d["notes"], "activation traffic unknown (no build manifest): bytes moved counts the weights only"]
    if calibration is not None and not applies_to(calibration, device):
        d["notes"] = [*d["notes"], f"calibration file {Path(calibration).name} is for another device profile: not applied"]
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


def unjudged_failure(device: DeviceProfile, budget_ms: float, files: list[str], runner: str) -> str:
    """The line a build prints when it has no estimate to hold `max_latency_ms` against:
    a budget that is declared must be either judged or explicitly waived."""
    what = ", ".join(files)
    why = (f"the {runner} runner measures this machine, not {device.name}" if runner == "host"
           else f"no estimate for {device.name} was made")
    return (f"max_latency_ms = {budget_ms:g} cannot be judged in this build ({why}; {what}): build with "
            f"--runner qemu to estimate {device.name} latency, or pass --no-latency-gate to waive the latency "
            f"budget (recorded in the manifest)")


def check_calibration_threads(device: DeviceProfile, threads: int) -> None:
    """Refuse a thread count whose p50 no estimate can be divided by: estimates use at
    most the fastest cluster's cores, so more threads would be filed under fewer."""
    from edgepack.devices.estimate import fastest_cluster
    from edgepack.errors import ConfigError

    cluster = fastest_cluster(device)
    if threads > cluster.count:
        raise ConfigError(f"--threads {threads}: {device.name}'s latency estimates use at most its {cluster.core} "
                          f"cluster's {cluster.count} cores, so a p50 on {threads} threads cannot calibrate them; "
                          f"valid: --threads 1 to {cluster.count}")


def calibrate_from(device: DeviceProfile, *, file: str, fmt: str, precision: str, measured_ms: float | None,
                   previous_rows: list[dict], runner: str, threads: int, calibration: Path | None,
                   measured_threads: int | None = None) -> str | None:
    """Add a real-device p50, measured with `threads` runtime threads, to the calibration
    file `calibration`, against the uncalibrated estimate for the same artifact, format,
    precision and thread count; builds given that file apply the ratio to estimates of
    that key only. Returns the name of the file written, or None when no file was named
    or the artifact has no estimate to compare with.

    The estimate recorded by the build may be for another thread count: it is computed
    again from its recorded inputs (instructions, bytes moved) at `threads`, because a
    p50 on 4 threads over an estimate for 1 would make the factor describe the thread
    count, not the device. A thread count the estimate cannot represent (more threads
    than the profile's fastest cluster has cores), or a run that reports another thread
    count than asked (`measured_threads`), is refused: its ratio would be filed under a
    thread count it was not measured at."""
    from edgepack.devices.estimate import estimate_latency, record_calibration
    from edgepack.errors import ConfigError

    est = next((r["estimate"] for r in previous_rows if r.get("method") == "estimated" and r.get("device") == device.name), None)
    if calibration is None or est is None or not measured_ms:
        return None
    if measured_threads is not None and measured_threads != threads:
        raise ConfigError(f"{file}: the {runner} run reports {measured_threads} threads, not the --threads {threads} "
                          f"asked; not recorded in {Path(calibration).name}, whose factors are kept per thread count")
    check_calibration_threads(device, threads)
    uncalibrated = estimate_latency(device, instructions_per_inference=est["instructions_per_inference"],
                                    counted_on=est["counted_on"], bytes_moved=est["bytes_moved"],
                                    precision=precision, threads=threads, fmt=fmt)
    cal = record_calibration(device.name, artifact=file, fmt=fmt, precision=precision, threads=uncalibrated.threads,
                             measured_ms=measured_ms, estimated_ms=uncalibrated.estimate_ms, runner=runner,
                             path=calibration)
    return cal.path.name


def delegated_share(export_details: dict | None) -> float | None:
    """Share of an ExecuTorch program's compute nodes inside the XNNPACK delegate (the
    exporter records both counts); None for formats whose converter does not report it."""
    details = export_details or {}
    inside = details.get("delegated_nodes")
    if inside is None or details.get("backend") == "none":   # lowered without a delegate, as the target asked
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
