"""The Python API. The CLI builds a request and calls these; a notebook calls the same."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgepack.pipeline.records import ArtifactRecord, FailedArtifact
from edgepack.plan import BuildPlan, make_plan

__all__ = ["make_plan", "build", "BuildResult", "TargetResult", "ArtifactRecord"]

BUILD_SCHEMA = "edgepack.build/1"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TargetResult:
    target: str
    device: str
    dist: Path | None               # None when the build failed its gates
    rejected: Path | None           # where a gated-out build was kept for inspection
    manifest: dict
    failures: tuple[str, ...]
    artifacts: tuple[ArtifactRecord, ...]
    failed_artifacts: tuple[FailedArtifact, ...] = ()   # not built: converter, quantizer or runtime failed

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def complete(self) -> bool:
        return not self.failed_artifacts


@dataclass(frozen=True)
class BuildResult:
    project: str
    targets: tuple[TargetResult, ...]
    seconds: float

    @property
    def exit_code(self) -> int:
        """3 when an artifact could not be built (a toolchain failed), else 1 when a
        budget failed, else 0."""
        if not all(t.complete for t in self.targets):
            return 3
        return 0 if all(t.passed for t in self.targets) else 1

    def as_dict(self) -> dict:
        return {
            "schema": BUILD_SCHEMA,
            "project": self.project,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 2),
            "targets": [
                {
                    "target": t.target,
                    "device": t.device,
                    "passed": t.passed,
                    "failures": list(t.failures),
                    "dist": str(t.dist) if t.dist else None,
                    "rejected": str(t.rejected) if t.rejected else None,
                    "failed_artifacts": [f.manifest_entry() for f in t.failed_artifacts],
                    "manifest": t.manifest,
                }
                for t in self.targets
            ],
        }


def build(plan: BuildPlan, *, progress: Progress | None = None) -> BuildResult:
    """Export, verify and measure every artifact of every target in the plan, and write
    each target's dist folder. Raises EdgepackError subclasses for bad input (exit 2) and
    toolchain failures (exit 3); budget failures are reported in the result (exit 1).

    The steps (edgepack.pipeline): load -> capture -> compress -> [per target, per artifact:
    export -> verify -> measure] -> gate -> write. An artifact whose toolchain fails is
    recorded as failed; the target's others are still built (exit 3, dist set aside)."""
    from edgepack.devices.host import HostRunner
    from edgepack.interrupts import check_interrupted
    from edgepack.pipeline import gate, write
    from edgepack.pipeline.workshop import Workshop
    from edgepack.release.toolchain import toolchain_versions

    say = progress or (lambda msg: None)
    started = time.perf_counter()
    loaded, uncapturable, compressed, timings = prepare(plan, say)
    if plan.runner == "qemu":
        _provision_emulation(say)
    toolchain = toolchain_versions()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as workspace:
        workshop = Workshop(plan, loaded, compressed, workspace=Path(workspace), host_runner=HostRunner(), say=say,
                            uncapturable=uncapturable)
        for tp in plan.targets:
            made = [workshop.record(tp, spec) for spec in tp.target.artifacts]
            check_interrupted()
            records = [r for r in made if isinstance(r, ArtifactRecord)]
            failed = [r for r in made if isinstance(r, FailedArtifact)]
            verdict = gate.gate(tp, records, failed, runner=plan.runner, latency_gate=plan.latency_gate)
            doc = write.manifest(plan, tp, loaded, compressed, records, verdict, toolchain, failed,
                                 timings={**timings, **workshop.timings})
            folder, finished = write.write(plan, tp, loaded, compressed, records, verdict, doc, say)
            results.append(TargetResult(
                target=tp.target.name, device=tp.device.name,
                dist=folder if verdict.passed else None, rejected=None if verdict.passed else folder,
                manifest=finished, failures=verdict.failures, artifacts=tuple(records),
                failed_artifacts=tuple(failed),
            ))
    return BuildResult(plan.project.project.name, tuple(results), time.perf_counter() - started)


def prepare(plan: BuildPlan, say: Progress):
    """The steps every artifact of a build starts from: load -> capture -> compress.
    Returns (Loaded, what the capture stopped, Compressed, seconds per step)."""
    from edgepack._quiet import quiet_toolchains
    from edgepack.determinism import pin_float_kernels
    from edgepack.interrupts import check_interrupted
    from edgepack.pipeline.capture import capture
    from edgepack.pipeline.compress import compress
    from edgepack.pipeline.load import load

    pin_float_kernels()   # before the first torch convolution of this process
    quiet_toolchains()
    started = time.perf_counter()
    loaded = load(plan, say)
    check_interrupted()
    loaded_at = time.perf_counter()
    uncapturable, capture_seconds = capture(plan, loaded, say)
    check_interrupted()
    captured_at = time.perf_counter()
    compressed = compress(plan, loaded, say)
    check_interrupted()
    timings = {"load": round(loaded_at - started, 2), "capture": round(capture_seconds, 2),
               "compress": round(time.perf_counter() - captured_at, 2)}
    return loaded, uncapturable, compressed, timings


def _provision_emulation(say: Progress) -> None:
    from edgepack.devices import sysroot

    if sysroot.find_env() is None:
        say("preparing the emulated aarch64 environment (once; cached)")
        sysroot.setup(progress=False)


# --------------------------------------------------------------------------- releases
# Thin entry points into edgepack.release; each imports its module when called, so
# importing this API (and `edgepack --help`) loads no crypto or plotting library.

from edgepack.release.diff import Thresholds  # noqa: E402  (a plain dataclass, no heavy imports)


def dist_folder(project_dir: Path, target: str, output_dir: Path | None = None) -> Path:
    """dist/<target>/ as `build` wrote it: under `output_dir` when given, else under the
    project's build.output_dir."""
    from edgepack.errors import ConfigError
    from edgepack.names import check_name

    try:
        check_name(target)
    except ValueError as e:
        raise ConfigError(f"--target: {e}") from None
    if output_dir is None:
        from edgepack.config.loader import load_project

        output_dir = project_dir.resolve() / load_project(project_dir.resolve()).build.output_dir
    return output_dir.resolve() / target


def package(dist: Path, *, archive: Path | None = None, sign_key: Path | None = None, against: Path | None = None,
            thresholds: Thresholds | None = None, reproducible: bool = False):
    from edgepack.release.packaging import package as _package

    return _package(dist, archive=archive, sign_key=sign_key, against=against, thresholds=thresholds,
                    reproducible=reproducible)


def verify(archive: Path, *, public_key: Path | None = None, run: bool = False, require_signature: bool = False):
    from edgepack.release.verification import verify as _verify

    return _verify(archive, public_key=public_key, run=run, require_signature=require_signature)


def keygen(stem: Path, *, force: bool = False):
    from edgepack.release.signing import keygen as _keygen

    return _keygen(stem, force=force)


def diff(old: Path, new: Path, thresholds: Thresholds | None = None):
    from edgepack.release.diff import diff_paths

    return diff_paths(old, new, thresholds or Thresholds())
