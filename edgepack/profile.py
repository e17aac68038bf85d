"""Profiling artifacts on a device: run each one where the runner says (host, emulated
aarch64, a board over ssh, a phone over adb), check its outputs against the recorded
reference, and collect timings, memory, instruction counts and estimates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack.devices.selection import RUNNERS, make_runner
from edgepack.devices.selection import ReachOverrides as Reach
from edgepack.errors import ConfigError
from edgepack.formats import FORMATS
from edgepack.release.manifest import load_manifest
from edgepack.release.paths import inside

PROFILE_SCHEMA = "edgepack.profile/1"


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
    atol: float | None = None           # how far a run may differ from `recorded` (the manifest's test vectors)
    delegate: str | None = None         # the delegate the target asked for (manifest); None: the runtime's default


@dataclass(frozen=True)
class ProfiledArtifact:
    file: str
    format: str
    precision: str
    measurement: object                 # manifest_model.Measured or Emulated: the run's row
    warnings: tuple[str, ...] = ()
    estimates: tuple = ()               # manifest_model.Estimated rows derived from the run
    divergence: str | None = None       # why the run does not compute what the build verified

    @property
    def rows(self) -> list[dict]:
        """The run's row, then its estimates, as the manifest holds them."""
        return [self.measurement.to_json(), *(e.to_json() for e in self.estimates)]


@dataclass(frozen=True)
class ProfileResult:
    device: str
    runner: str
    source: str
    artifacts: tuple[ProfiledArtifact, ...] = field(default_factory=tuple)

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(a.divergence for a in self.artifacts if a.divergence)

    @property
    def exit_code(self) -> int:
        """1 when a device computes other outputs than the build verified (the device's
        kernels are the authority), else 0."""
        return 1 if self.failures else 0

    def as_dict(self) -> dict:
        return {"schema": PROFILE_SCHEMA, "device": self.device, "runner": self.runner, "source": self.source,
                "ok": self.exit_code == 0, "exit_code": self.exit_code, "failures": list(self.failures),
                "artifacts": [{"file": a.file, "format": a.format, "precision": a.precision,
                               "measurement": a.measurement.to_json(),
                               "estimates": [e.to_json() for e in a.estimates],
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
        # Validated before anything runs: a malformed manifest is bad input (exit 2).
        manifest = load_manifest(manifest_file)
        # The manifest admits plain names only; `inside` also refuses links out of the dist.
        def dist_file(rel: str, what: str) -> Path:
            return inside(path, rel, what=f"{manifest_file}: {what}")

        if str(((manifest.get("test_vectors") or {}).get("inputs") or {}).get("file", "")).endswith(".npz"):
            raise ConfigError(f"{path}: the model has several inputs or outputs (manifest source.inputs, source.outputs); "
                              "`edgepack profile` runs one-input, one-output models for now: use `edgepack verify --run` "
                              "on its release to re-run it")
        x = (_load_npy(Path(inputs), "inputs") if inputs
             else _load_npy(dist_file("testdata/inputs.npy", "test inputs"), "test inputs"))
        reference = None if inputs else _load_npy(dist_file("testdata/reference.npy", "reference outputs"), "reference outputs")
        found = []
        tolerances = {f: o.get("atol") for f, o in ((manifest.get("test_vectors") or {}).get("outputs") or {}).items()}
        for a in manifest["artifacts"]:
            recorded = dist_file(f"testdata/{a['file']}.npy", "recorded outputs")
            found.append(Subject(dist_file(a["file"], "artifact"), a["format"], a["precision"], x, reference,
                                 None if inputs or not recorded.is_file() else _load_npy(recorded, "recorded outputs"),
                                 a.get("export"), tolerances.get(a["file"]), (a.get("delegate") or {}).get("requested")))
        return found, manifest
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    found_format = FORMATS.by_extension(path.suffix)   # looked up now: formats may be registered after import
    if found_format is None:
        valid = ", ".join(sorted(FORMATS.extensions().values()))
        raise ConfigError(f"{path}: unknown artifact type {path.suffix!r}; valid: {valid} or a dist folder")
    fmt = found_format.name
    if inputs is None:
        raise ConfigError(f"{path}: a single artifact needs --inputs FILE.npy (float32, [N, ...] in the model's input shape)")
    return [Subject(path, fmt, "unknown", _load_npy(Path(inputs), "inputs"), None, None)], None


def profile(path: Path, *, device: str | None = None, runner: str = "host", inputs: Path | None = None,
            iterations: int = 50, warmup: int = 10, threads: int = 1, project_dir: Path = Path("."),
            write_manifest: bool = True, reach: Reach = Reach(), op_profile: bool = False,
            calibration: Path | None = None, progress=lambda m: None) -> ProfileResult:
    from edgepack._quiet import quiet_toolchains
    from edgepack.config.loader import profiles_catalog

    quiet_toolchains()
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: valid runners: {', '.join(RUNNERS)}")
    found, manifest = subjects(path, inputs)
    device = device or (manifest or {}).get("device_profile")
    if not device:
        raise ConfigError("--device is required when profiling a single artifact; see `edgepack devices`")
    dev = profiles_catalog(project_dir.resolve()).load(device)
    from edgepack.devices.latency import calibrate_from, check_calibration_threads
    from edgepack.pipeline.measure import measure_on, warnings_for

    if calibration is not None and runner in ("ssh", "adb"):
        check_calibration_threads(dev, threads)   # before any run: it would not be recorded

    run_on = make_runner(runner, dev, reach)
    activation_elements = ((manifest or {}).get("source") or {}).get("activation_elements")
    earlier = {a["file"]: a.get("measurements") or [] for a in (manifest or {}).get("artifacts", [])}
    profiled = []
    for s in found:
        progress(f"{s.path.name}: running on {runner} ({dev.name})")
        measured = measure_on(run_on, dev, path=s.path, fmt=s.format, precision=s.precision, inputs=s.inputs,
                              reference=s.reference, recorded=s.recorded, warmup=warmup, iterations=iterations,
                              threads=threads, activation_elements=activation_elements,
                              calibration=calibration, op_profile=op_profile, delegate=s.delegate)
        row = measured.row
        if runner in ("ssh", "adb"):
            written = calibrate_from(dev, file=s.path.name, fmt=s.format, precision=s.precision,
                                     measured_ms=row.p50_ms, previous_rows=earlier.get(s.path.name, []), runner=runner,
                                     threads=threads, measured_threads=row.threads, calibration=calibration)
            if written:
                row = row.model_copy(update={"calibrated": written})
        warnings = warnings_for(dev, precision=s.precision, export_details=s.export_details, rows=[row])
        profiled.append(ProfiledArtifact(s.path.name, s.format, s.precision, row, tuple(warnings),
                                         (measured.estimate,) if measured.estimate else (),
                                         _divergence(s, row, dev.name, runner)))
    res = ProfileResult(dev.name, runner, str(path), tuple(profiled))
    if manifest is not None and write_manifest:
        _record(path.resolve() / "manifest.json", manifest, res)
    return res


def _divergence(s: Subject, row, device: str, runner: str) -> str | None:
    """The run's outputs against the build host's recorded ones, judged by the release
    tolerance the manifest states (two output quantization steps for int8)."""
    parity = getattr(row, "parity", None)
    diff = None if parity is None or isinstance(parity, str) else parity.max_abs_diff_vs_build_host
    if diff is None or s.atol is None or diff <= s.atol:
        return None
    return (f"{s.path.name} on {device} ({runner}): outputs differ from the build host's by {diff:.4g}, more than "
            f"the tolerance of {s.atol:.4g}; this device computes another model than the one the build verified")


def _record(manifest_file: Path, manifest: dict, res: ProfileResult) -> None:
    """Keep the figures with the build: replace this device+runner's rows, keep others,
    and draw the report again so it shows them. The manifest is validated (rows included)
    before it replaces the old one."""
    from edgepack.release.manifest import write_manifest
    from edgepack.release.report import write_report

    by_file = {a.file: a for a in res.artifacts}
    for a in manifest["artifacts"]:
        p = by_file.get(a["file"])
        if p is None:
            continue
        replaced = {res.runner, *(["estimate"] if p.estimates else [])}
        rows = [m for m in a.get("measurements") or [] if not (m.get("device") == res.device and m.get("runner") in replaced)]
        a["measurements"] = rows + p.rows
    written = write_manifest(manifest_file, manifest)
    write_report(written, manifest_file.parent)
