"""Latency estimates for a device profile, from what is deterministic about an artifact.

Emulation cannot time a device (qemu's wall time ignores the microarchitecture), but it
can count exactly what the device would execute: the guest instructions per inference
under the runtime's own kernels for that CPU model (devices/qemu.py). The estimate turns
that count into time with the device's published facts:

    compute_ms = instructions / (ipc * clock * threads * efficiency(threads))
    memory_ms  = bytes_moved / memory_bandwidth
    estimate   = max(compute_ms, memory_ms) * calibration_factor

- `instructions`: guest instructions per inference counted on the profile's `qemu_cpu`,
  one runtime thread (exact).
- `ipc`: the core's effective instructions per cycle on NN kernels, stored per cluster in
  the profile (`nn_ipc`, and `nn_ipc_int8` for static int8) and fitted by
  devices/fit.py from published XNNPACK latencies of four MobileNets divided into this
  project's instruction counts of the same architectures (data/*.toml; a test recomputes
  every shipped value). The fastest cluster is used (a runtime's threads run there first).
- `efficiency(n)`: multi-thread scaling; 1 for one thread, beyond it the cluster's fitted
  `nn_parallel_efficiency` at 1e8 instructions, growing as instructions **
  `nn_parallel_efficiency_slope` (fit.scaling; PARALLEL_EFFICIENCY without a fit).
- `bytes_moved`: weights read once plus every activation written and read once: a roofline
  floor (caches hide part of it), which only wins for memory-starved boards.
- `calibration_factor`: measured_ms / estimated_ms from a real unit of this device
  (ssh/adb) for the same format, precision and thread count, read from a calibration
  file the build or profile is given explicitly (`--latency-calibration FILE`,
  `[build] latency_calibration`); 1 without one or without a matching measurement.

Every result says it is an estimate, its method, every input it used, and the error to
expect: the leave-one-model-out error of its rate on published rows (devices/fit.py),
or "unvalidated" where no published figure of that core and precision exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgepack.config.schema import CoreCluster, DeviceProfile
from edgepack.errors import ConfigError

METHOD = ("estimate: max(instructions / (nn_ipc * clock * threads * efficiency), bytes_moved / memory_bandwidth) "
          "x calibration factor; instructions counted under qemu on the profile's CPU model, nn_ipc from the "
          "profile's cited basis")

# Measured 1 -> 4 thread scaling of MobileNetV2 fp32 under XNNPACK on a Pixel 2 (4 big
# cores): 53 ms -> 18 ms, a speed-up of 2.94 on 4 threads, 0.74 per thread (XNNPACK
# README, "Performance / Mobile phones", single- and multi-threaded tables).
PARALLEL_EFFICIENCY = 0.74
CALIBRATION_SCHEMA = "edgepack.calibration/2"


@dataclass(frozen=True)
class LatencyEstimate:
    """One estimated latency, with its method and inputs. Never a measurement."""

    device: str
    estimate_ms: float
    compute_ms: float
    memory_ms: float
    bound: str                      # "compute" or "memory"
    core: str
    clock_ghz: float
    nn_ipc: float
    precision: str                  # the artifact's; int8 selects the cluster's nn_ipc_int8 when it has one
    threads: int
    instructions_per_inference: float
    counted_on: str                 # qemu CPU model the instructions were counted on
    bytes_moved: int
    memory_bandwidth_gbs: float
    calibration_factor: float
    calibration_source: str         # the calibration file's name, or "none (...)" saying why not
    ipc_basis: str
    expected_error: dict = field(default_factory=dict)   # fit.ErrorSummary.as_dict()
    kind: str = "estimate"
    method: str = METHOD
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("estimate_ms", "compute_ms", "memory_ms"):
            d[key] = round(d[key], 3)
        d["notes"] = list(self.notes)
        return d

    @property
    def label(self) -> str:
        expected = self.expected_error.get("text", "unvalidated")
        return (f"~{self.estimate_ms:.1f} ms (estimate, {self.threads} thread{'s' if self.threads > 1 else ''}, "
                f"{self.core}; {expected})")


def fastest_cluster(profile: DeviceProfile) -> CoreCluster:
    """The cluster a runtime's threads land on first: highest nn_ipc * clock among those
    that have an nn_ipc."""
    rated = [c for c in profile.clusters if c.nn_ipc is not None]
    if not rated:
        raise ConfigError(
            f"profile {profile.name!r}: no cluster has nn_ipc, so no latency can be estimated; "
            f"add nn_ipc and nn_ipc_basis to a [[clusters]] table")
    return max(rated, key=lambda c: c.nn_ipc * c.max_clock_ghz)


def parallel_efficiency(threads: int, cluster: CoreCluster | None = None, instructions: float | None = None) -> float:
    """Per-thread scaling on `threads` threads: the cluster's fitted curve at this many
    instructions per inference (devices/fit.py), or PARALLEL_EFFICIENCY without one."""
    from edgepack.devices.fit import scaling

    if threads <= 1:
        return 1.0
    if cluster is None or not cluster.nn_parallel_efficiency:
        return PARALLEL_EFFICIENCY
    return scaling(cluster.nn_parallel_efficiency, cluster.nn_parallel_efficiency_slope,
                   instructions if instructions is not None else 1e8)


def expected_error(profile: DeviceProfile, cluster: CoreCluster, precision: str, *, threads: int, fmt: str | None) -> dict:
    """The held-out error of this cluster's rate (devices/fit.py), or unvalidated. A
    board's rate is validated at its published thread count only."""
    from edgepack.devices.fit import expected_error as held_out

    summary = held_out(profile.name, cluster.core, precision, threads=threads, fmt=fmt)
    return summary.as_dict()


def estimate_latency(
    profile: DeviceProfile,
    *,
    instructions_per_inference: float,
    counted_on: str,
    bytes_moved: int,
    precision: str = "fp32",
    threads: int = 1,
    calibration: "Calibration | None" = None,
    fmt: str | None = "tflite",
) -> LatencyEstimate:
    """Estimate one inference's latency on `profile`. `counted_on` must be the profile's
    qemu CPU model: counts from another model ran other kernels (dotprod or not, tuned
    for another core) and would describe another program. `fmt` is the artifact's
    format: the rates are validated on LiteRT (tflite) counts only, so any other format's
    estimate says it is unvalidated."""
    if instructions_per_inference <= 0:
        raise ValueError(f"instructions_per_inference must be positive, got {instructions_per_inference}")
    if bytes_moved < 0:
        raise ValueError(f"bytes_moved must be >= 0, got {bytes_moved}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if counted_on != profile.qemu_cpu:
        raise ValueError(
            f"instructions were counted on {counted_on!r}, but profile {profile.name!r} is emulated as "
            f"{profile.qemu_cpu!r}; count on the profile's own CPU model")
    cluster = fastest_cluster(profile)
    notes = []
    usable = min(threads, cluster.count)
    if usable < threads:
        notes.append(f"{threads} threads asked, the {cluster.core} cluster has {cluster.count} cores: estimated with {usable}")
    ipc, basis = cluster.nn_ipc, cluster.nn_ipc_basis
    if precision == "int8":
        if cluster.nn_ipc_int8 is not None:
            ipc, basis = cluster.nn_ipc_int8, cluster.nn_ipc_int8_basis
        else:
            notes.append(f"no published int8 figure for {cluster.core}: int8 instructions timed at the fp32 kernels' rate")
    elif precision != "fp32":
        # fp16 and int8-dynamic run other kernels than any published row (XNNPACK
        # published fp32 and static int8 only): timed at the fp32 rate, validated by nothing.
        notes.append(f"no published {precision} figure: its instructions timed at the fp32 kernels' rate")
    cycles_per_s = cluster.max_clock_ghz * 1e9
    efficiency = parallel_efficiency(usable, cluster, instructions_per_inference)
    compute_ms = instructions_per_inference / (ipc * cycles_per_s * usable * efficiency) * 1e3
    memory_ms = bytes_moved / (profile.memory_bandwidth_gbs * 1e9) * 1e3
    if calibration and calibration.profile != profile.name:
        raise ValueError(f"calibration {calibration.path} is for profile {calibration.profile!r}, not {profile.name!r}")
    factor, source = 1.0, "none (no calibration given)"
    if calibration:
        matched = calibration.factor_for(fmt, precision, usable)
        if matched is None:
            source = f"none ({calibration.path.name} has no {describe_key(fmt, precision, usable)} measurement)"
            notes.append(f"calibration {calibration.path.name} not applied: it holds "
                         f"{', '.join(describe_key(*k) for k in calibration.keys()) or 'no measurements'}, "
                         f"not {describe_key(fmt, precision, usable)}")
        else:
            factor, source = matched, calibration.path.name
    if usable > 1:
        notes.append(f"multi-thread efficiency {efficiency:.3f} per thread"
                     + (" (fitted with the cluster's rate)" if cluster.nn_parallel_efficiency else
                        " (XNNPACK's published Pixel 2 scaling; none fitted for this cluster)"))
    # A precision with no published rows of its own (int8 on a core without an int8
    # figure, fp16, int8-dynamic) is validated by nothing, whatever rate timed it.
    expected = expected_error(profile, cluster, precision, threads=usable, fmt=fmt)
    return LatencyEstimate(
        device=profile.name,
        estimate_ms=max(compute_ms, memory_ms) * factor,
        compute_ms=compute_ms,
        memory_ms=memory_ms,
        bound="compute" if compute_ms >= memory_ms else "memory",
        core=cluster.core,
        clock_ghz=cluster.max_clock_ghz,
        nn_ipc=ipc,
        precision=precision,
        threads=usable,
        instructions_per_inference=float(instructions_per_inference),
        counted_on=counted_on,
        bytes_moved=int(bytes_moved),
        memory_bandwidth_gbs=profile.memory_bandwidth_gbs,
        calibration_factor=factor,
        calibration_source=source,
        ipc_basis=basis,
        expected_error=expected,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- bytes moved


def bytes_moved(*, weight_bytes: int, activation_elements: int, activation_bytes_per_element: int) -> int:
    """Weights read once, every activation written once and read once."""
    if min(weight_bytes, activation_elements, activation_bytes_per_element) < 0:
        raise ValueError("byte and element counts must be >= 0")
    return int(weight_bytes + 2 * activation_elements * activation_bytes_per_element)


def activation_bytes_per_element(precision: str) -> int:
    """What each activation element costs in memory for an artifact of `precision`:
    static int8 keeps activations in int8; every other precision computes in float32 on
    CPUs (fp16 weights are widened unless the runtime has fp16 kernels)."""
    return 1 if precision == "int8" else 4


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationPoint:
    artifact: str
    format: str                     # tflite, executorch, onnx: each runtime runs its own kernels
    precision: str                  # fp32, fp16, int8, int8-dynamic: each its own kernels and rate
    threads: int                    # runtime threads of the measurement and of the estimate it is divided by
    measured_ms: float
    estimated_ms: float             # the uncalibrated estimate for the same artifact at the same threads
    runner: str                     # ssh, adb
    recorded: str                   # UTC timestamp

    @property
    def key(self) -> tuple[str, str, int]:
        return self.format, self.precision, self.threads


def describe_key(fmt: str, precision: str, threads: int) -> str:
    return f"{fmt} {precision} at {threads} thread{'s' if threads != 1 else ''}"


@dataclass(frozen=True)
class Calibration:
    """measured / estimated on a real unit of one device profile, kept apart per format,
    precision and thread count: a ratio measured on ONNX Runtime's int8 kernels on 4
    threads says nothing about LiteRT's fp32 kernels on one. The factor of a key is the
    geometric mean of its artifacts' ratios: ratios multiply, so an artifact that ran
    2x slow and one that ran 2x fast cancel out."""

    profile: str
    path: Path
    measurements: tuple[CalibrationPoint, ...] = field(default_factory=tuple)

    def matching(self, fmt: str | None, precision: str, threads: int) -> tuple[CalibrationPoint, ...]:
        return tuple(m for m in self.measurements if m.key == (fmt, precision, threads))

    def factor_for(self, fmt: str | None, precision: str, threads: int) -> float | None:
        """The factor for estimates of this format, precision and thread count; None when
        the file holds no measurement of that key (nothing is borrowed from another)."""
        points = self.matching(fmt, precision, threads)
        if not points:
            return None
        logs = [math.log(m.measured_ms / m.estimated_ms) for m in points]
        return math.exp(sum(logs) / len(logs))

    def keys(self) -> list[tuple[str, str, int]]:
        return sorted({m.key for m in self.measurements})

    def as_dict(self) -> dict:
        return {
            "schema": CALIBRATION_SCHEMA,
            "profile": self.profile,
            "factors": [{"format": f, "precision": p, "threads": t, "factor": round(self.factor_for(f, p, t), 6)}
                        for f, p, t in self.keys()],
            "measurements": [asdict(m) for m in self.measurements],
        }


def calibration_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_calibration_doc(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"calibration file {path}: not readable JSON ({e})") from None
    got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
    if got == "edgepack.calibration/1":
        raise ConfigError(f"calibration file {path}: schema {got!r} kept one factor for every format, precision and "
                          f"thread count; record it again with `edgepack profile --runner ssh|adb --threads N "
                          f"--latency-calibration {Path(path).name}` (schema {CALIBRATION_SCHEMA!r})")
    if got != CALIBRATION_SCHEMA:
        raise ConfigError(f"calibration file {path}: schema {got!r}, expected {CALIBRATION_SCHEMA!r}")
    return doc


def read_calibration_profile(path: Path) -> str:
    """The profile a calibration file is for (checked before a build starts)."""
    return str(_read_calibration_doc(path).get("profile"))


def load_calibration(profile: str, *, path: Path) -> Calibration:
    """The calibration of `profile` stored in `path`. Calibration is an explicit input:
    nothing is looked up in a home or cache folder, and a named file must exist."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file {path} not found; `edgepack profile --runner ssh|adb --latency-calibration "
                          f"{path.name}` writes one")
    doc = _read_calibration_doc(path)
    try:
        if doc.get("profile") != profile:
            raise ValueError(f"it is for profile {doc.get('profile')!r}, not {profile!r}")
        measurements = tuple(CalibrationPoint(**m) for m in doc["measurements"])
        for m in measurements:
            if m.measured_ms <= 0 or m.estimated_ms <= 0:
                raise ValueError(f"{m.artifact}: times must be positive")
            if not isinstance(m.threads, int) or m.threads < 1:
                raise ValueError(f"{m.artifact}: threads must be an integer >= 1, got {m.threads!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"calibration file {path}: {e}") from None
    return Calibration(profile, path, measurements)


def record_calibration(profile: str, *, artifact: str, fmt: str, precision: str, threads: int, measured_ms: float,
                       estimated_ms: float, runner: str, path: Path) -> Calibration:
    """Add one real-device measurement to the calibration file `path` (created when
    missing; an earlier measurement of the same artifact, format, precision and thread
    count is replaced) and write it atomically."""
    from edgepack.release.dist import write_json

    if measured_ms <= 0 or estimated_ms <= 0:
        raise ValueError(f"measured_ms and estimated_ms must be positive, got {measured_ms} and {estimated_ms}")
    path = Path(path)
    old = load_calibration(profile, path=path) if path.exists() else None
    new = CalibrationPoint(artifact, fmt, precision, int(threads), float(measured_ms), float(estimated_ms), runner,
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    kept = tuple(m for m in (old.measurements if old else ()) if (m.artifact, m.key) != (artifact, new.key))
    cal = Calibration(profile, path, kept + (new,))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A uniquely named temporary file beside it, then a rename: two profiles writing at
    # once never share a temporary file, and a reader sees the old file or the new one.
    write_json(path, cal.as_dict())
    return cal


# --------------------------------------------------------------------------- int8 warning


def int8_slower_warnings(
    profile: DeviceProfile,
    *,
    fp32_instructions: float | None = None,
    int8_instructions: float | None = None,
    int8_dotprod: float | None = None,
    int8_mmla: float | None = None,
    delegated_share: float | None = None,
) -> list[str]:
    """Reasons int8 is likely to be no faster, or slower, than fp32 on this device. Empty
    when none applies. Each reason names the evidence."""
    warnings = []
    fast_int8 = {"dotprod", "i8mm"} & set(profile.features)
    if not fast_int8:
        warnings.append(
            f"{profile.name}: no dotprod or i8mm ({', '.join(profile.features)}): int8 kernels widen to 16-bit "
            f"multiplies (SMULL/SMLAL), doing no more multiplies per instruction than fp32 FMLA; int8 is faster "
            f"only where the runtime's int8 kernels are well tuned for this core: measure before choosing it")
    elif int8_dotprod is not None and int8_mmla is not None and int8_dotprod == 0 and int8_mmla == 0:
        warnings.append(
            f"{profile.name} has {', '.join(sorted(fast_int8))}, but the int8 artifact executed no SDOT/UDOT or "
            f"SMMLA/UMMLA instructions on {profile.qemu_cpu}: its kernels do not use them")
    if delegated_share is not None and delegated_share < 1.0:
        # whole percents, but never "100%" for a share short of it (0.997 reads 99.7%)
        share = (f"{delegated_share * 100:.0f}" if round(delegated_share * 100) < 100
                 else f"{math.floor(delegated_share * 1000) / 10:.1f}")
        warnings.append(
            f"only {share}% of the int8 ops are delegated to XNNPACK: the rest run in the "
            f"runtime's reference kernels with quantize/dequantize around them")
    if fp32_instructions is not None and int8_instructions is not None and int8_instructions >= fp32_instructions:
        warnings.append(
            f"int8 executes {int8_instructions / fp32_instructions:.2f}x the instructions of fp32 on "
            f"{profile.qemu_cpu} ({int8_instructions:,.0f} vs {fp32_instructions:,.0f} per inference)")
    return warnings
