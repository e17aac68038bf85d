"""Profiling artifacts on a device: run each one where the runner says (host, emulated
aarch64, a board over ssh, a phone over adb), check its outputs against the recorded
reference, and collect timings, memory, instruction counts and estimates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack.devices.selection import RUNNERS, make_runner
from edgepack.devices.selection import ReachOverrides as Reach
from edgepack.errors import ConfigError
from edgepack.formats import FORMATS

PROFILE_SCHEMA = "edgepack.profile/1"
FORMAT_OF = {ext: fmt for fmt, ext in FORMATS.extensions().items()}


@dataclass(frozen=True)
class Subject:
    """One artifact to profile, with the inputs and the outputs it is checked against."""

    path: Path
    format: str
    precision: str
    inputs: np.ndarray
    reference: np.ndarray | None        # the fp32 model's outputs on `inputs`
    recorded: np.ndarray | None         # the same artifact's outputs on the build host
    export_details: dict | None = None  # what the exporter reported (delegation, ops)


@dataclass(frozen=True)
class ProfiledArtifact:
    file: str
    format: str
    precision: str
    measurement: dict                   # one manifest `measurements` row
    warnings: tuple[str, ...] = ()
    estimates: tuple[dict, ...] = ()    # estimated-latency rows derived from the run


@dataclass(frozen=True)
class ProfileResult:
    device: str
    runner: str
    source: str
    artifacts: tuple[ProfiledArtifact, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {"schema": PROFILE_SCHEMA, "device": self.device, "runner": self.runner, "source": self.source,
                "artifacts": [{"file": a.file, "format": a.format, "precision": a.precision,
                               "measurement": a.measurement, "estimates": list(a.estimates),
                               "warnings": list(a.warnings)} for a in self.artifacts]}


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable .npy {what} file ({e})") from None


def subjects(path: Path, inputs: Path | None) -> tuple[list[Subject], dict | None]:
    """The artifacts under `path` (a dist folder with manifest.json, or one artifact file)."""
    path = path.resolve()
    if path.is_dir():
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise ConfigError(f"{path}: no manifest.json; point at a dist/<target> folder from `edgepack build` or at one artifact file")
        manifest = json.loads(manifest_file.read_text())
        tv = path / "testdata"
        x = _load_npy(Path(inputs), "inputs") if inputs else _load_npy(tv / "inputs.npy", "test inputs")
        reference = None if inputs else _load_npy(tv / "reference.npy", "reference outputs")
        found = []
        for a in manifest["artifacts"]:
            recorded = tv / f"{a['file']}.npy"
            found.append(Subject(path / a["file"], a["format"], a["precision"], x, reference,
                                 None if inputs or not recorded.is_file() else _load_npy(recorded, "recorded outputs"),
                                 a.get("export")))
        return found, manifest
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    fmt = FORMAT_OF.get(path.suffix)
    if fmt is None:
        raise ConfigError(f"{path}: unknown artifact type {path.suffix!r}; valid: {', '.join(sorted(FORMAT_OF))} or a dist folder")
    if inputs is None:
        raise ConfigError(f"{path}: a single artifact needs --inputs FILE.npy (float32, [N, ...] in the model's input shape)")
    return [Subject(path, fmt, "unknown", _load_npy(Path(inputs), "inputs"), None, None)], None


def profile(path: Path, *, device: str | None = None, runner: str = "host", inputs: Path | None = None,
            iterations: int = 50, warmup: int = 10, threads: int = 1, project_dir: Path = Path("."),
            write_manifest: bool = True, reach: Reach = Reach(), op_profile: bool = False,
            progress=lambda m: None) -> ProfileResult:
    from edgepack._quiet import quiet_toolchains
    from edgepack.config.loader import profiles_catalog
    from edgepack.verify.metrics import snr_db

    quiet_toolchains()
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: valid runners: {', '.join(RUNNERS)}")
    found, manifest = subjects(path, inputs)
    device = device or (manifest or {}).get("device_profile")
    if not device:
        raise ConfigError("--device is required when profiling a single artifact; see `edgepack devices`")
    dev = profiles_catalog(project_dir.resolve()).load(device)
    from edgepack.devices.latency import calibrate_from, estimate_row, int8_warnings

    run_on = make_runner(runner, dev, reach)
    activation_elements = ((manifest or {}).get("source") or {}).get("activation_elements")
    earlier = {a["file"]: a.get("measurements") or [] for a in (manifest or {}).get("artifacts", [])}
    profiled = []
    for s in found:
        progress(f"{s.path.name}: running on {runner} ({dev.name})")
        extra = {"op_profile": True} if op_profile and runner in ("host", "ssh") else {}
        result = run_on.run(s.path, s.format, s.inputs, warmup=warmup, iterations=iterations, threads=threads, **extra)
        emulated = bool(getattr(result, "emulated_cpu", None))
        lat = result.latency_dict()
        row = {"device": dev.name, "method": "emulated" if emulated else "measured", **lat}
        if emulated:  # emulated wall time is not latency
            row.update(p50_ms=None, p90_ms=None, cpu=result.emulated_cpu, emulated_wall_p50_ms=round(result.p50_ms, 3))
            for k in ("p50", "p90", "p99", "mean", "std"):
                row.pop(k, None)
        else:
            row.update(p50_ms=lat.get("p50"), p90_ms=lat.get("p90"))
        extra_rows = []
        if emulated:
            est = estimate_row(dev, instructions=result.instructions, artifact_bytes=s.path.stat().st_size,
                               precision=s.precision, activation_elements=activation_elements, threads=threads,
                               project_dir=project_dir.resolve())
            if est:
                extra_rows.append(est)
        elif runner in ("ssh", "adb"):
            written = calibrate_from(dev, file=s.path.name, measured_ms=lat.get("p50"), previous_rows=earlier.get(s.path.name, []),
                                     runner=runner)
            if written:
                row["calibrated"] = written
        out = result.outputs
        if out is not None and s.reference is not None and out.shape == s.reference.shape:
            row["parity"] = {"samples": int(len(out)),
                             "agreement": float(np.mean(out.argmax(1) == s.reference.argmax(1))),
                             "max_abs_error": float(np.max(np.abs(out - s.reference))),
                             "snr_db": _finite(snr_db(s.reference, out))}
        if out is not None and s.recorded is not None and out.shape == s.recorded.shape:
            row.setdefault("parity", {})["max_abs_diff_vs_build_host"] = float(np.max(np.abs(out - s.recorded)))
        if getattr(result, "instructions", None):
            row["instructions"] = result.instructions
        if op_profile:
            row["ops"] = getattr(result, "ops", None) or f"not exposed by {s.format}'s runtime on the {runner} runner"
        warnings = int8_warnings(dev, precision=s.precision, export_details=s.export_details,
                                 instructions=getattr(result, "instructions", None))
        profiled.append(ProfiledArtifact(s.path.name, s.format, s.precision, row, tuple(warnings), tuple(extra_rows)))
    res = ProfileResult(dev.name, runner, str(path), tuple(profiled))
    if manifest is not None and write_manifest:
        _record(path.resolve() / "manifest.json", manifest, res)
    return res


def _finite(v: float):
    return None if v in (float("inf"), float("-inf")) else v


def _record(manifest_file: Path, manifest: dict, res: ProfileResult) -> None:
    """Keep the figures with the build: replace this device+runner's rows, keep others,
    and draw the report again so it shows them."""
    from edgepack.release.dist import write_json
    from edgepack.release.report import write_report

    by_file = {a.file: a for a in res.artifacts}
    for a in manifest["artifacts"]:
        p = by_file.get(a["file"])
        if p is None:
            continue
        replaced = {res.runner, *(["estimate"] if p.estimates else [])}
        rows = [m for m in a.get("measurements") or [] if not (m.get("device") == res.device and m.get("runner") in replaced)]
        a["measurements"] = rows + [p.measurement, *p.estimates]
    tmp = manifest_file.with_suffix(".json.tmp")
    write_json(tmp, manifest)
    tmp.replace(manifest_file)
    write_report(manifest, manifest_file.parent)
