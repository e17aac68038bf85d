"""The Python API. The CLI builds a request and calls these; a notebook calls the same."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgepack.errors import ConfigError
from edgepack.plan import BuildPlan, TargetPlan, make_plan

__all__ = ["make_plan", "build", "BuildResult", "TargetResult", "ArtifactResult"]

MANIFEST_SCHEMA = "edgepack.manifest/1"
BUILD_SCHEMA = "edgepack.build/1"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArtifactResult:
    format: str
    precision: str
    file: str
    sha256: str
    size_bytes: int
    fp32_reference_bytes: int     # the source model's fp32 weights, for the size ratio
    parity: dict
    latency_ms: dict
    export_seconds: float
    details: dict = field(default_factory=dict)
    measurements: tuple[dict, ...] = ()   # per device: emulated runs, estimates, real-device runs
    warnings: tuple[str, ...] = ()        # why this artifact may not pay off on the target's device
    key: tuple = field(default=(), compare=False, repr=False)   # the build's export cache key

    def manifest_entry(self) -> dict:
        p = self.parity
        return {
            "format": self.format,
            "precision": self.precision,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "size_vs_fp32_weights": round(self.size_bytes / self.fp32_reference_bytes, 4),
            "zipped_bytes": self.details.get("zipped_bytes"),
            "accuracy": round(p["accuracy"], 6),
            "reference_accuracy": round(p["reference_accuracy"], 6),
            "accuracy_drop_pt": round(p["accuracy_drop_pt"], 4),
            "agreement": round(p["agreement"], 6),
            "max_abs_error": round(p["max_abs_error"], 6),
            "snr_db": None if p["snr_db"] is None else round(p["snr_db"], 2),
            "dynamic_check": p.get("dynamic_check", []),
            "evaluated_samples": p["samples"],
            "latency_ms": self.latency_ms,
            "export": {k: v for k, v in self.details.items() if k != "zipped_bytes"},
            "measurements": list(self.measurements),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class TargetResult:
    target: str
    device: str
    dist: Path | None               # None when the build failed its gates
    rejected: Path | None           # where a gated-out build was kept for inspection
    manifest: dict
    failures: tuple[str, ...]
    artifacts: tuple[ArtifactResult, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class BuildResult:
    project: str
    targets: tuple[TargetResult, ...]
    seconds: float

    @property
    def exit_code(self) -> int:
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
                    "manifest": t.manifest,
                }
                for t in self.targets
            ],
        }


def _gate(target_plan: TargetPlan, art: ArtifactResult) -> list[str]:
    b = target_plan.target.budgets
    failures = []
    drop = art.parity["accuracy_drop_pt"]
    if drop > b.max_accuracy_drop_pt:
        failures.append(
            f"{art.file} ({art.format} {art.precision}): accuracy {art.parity['accuracy'] * 100:.2f}% vs reference "
            f"{art.parity['reference_accuracy'] * 100:.2f}%: drop {drop:.2f} pt exceeds the budget of {b.max_accuracy_drop_pt:g} pt"
        )
    if b.max_size_bytes is not None and art.size_bytes > b.max_size_bytes:
        failures.append(f"{art.file}: size {art.size_bytes:,} bytes exceeds the budget of {b.max_size_bytes:,} bytes")
    return failures


def _predict(module, x: np.ndarray, batch: int) -> np.ndarray:
    from edgepack.compress.evaluate import predict

    return predict(module, x, declared_batch=batch)


def _emulate(device, artifact: Path, fmt: str, evaluation, reference: np.ndarray, settings) -> dict:
    """Run one artifact on the device's emulated CPU: parity on aarch64 (against the fp32
    reference and, exactly, against the host's run) and the deterministic instruction count.
    Emulated wall time is recorded as such; it is never presented as latency."""
    from edgepack.devices.qemu import QemuRunner
    from edgepack.verify.metrics import compare

    run = QemuRunner(device, count_instructions=True).run(artifact, fmt, evaluation.x, warmup=2,
                                                          iterations=min(settings.iterations, 10), threads=1)
    parity = compare(reference, run.outputs, evaluation.y).as_dict()
    return {
        "method": "emulated", "runner": "qemu", "cpu": run.emulated_cpu, "machine": run.machine,
        "runtime": f"{run.runtime} {run.runtime_version}", "threads": run.threads,
        "p50_ms": None, "p90_ms": None,   # emulation is not latency
        "emulated_wall_p50_ms": round(run.p50_ms, 3), "timing": run.timing,
        "parity": {k: parity[k] for k in ("accuracy", "agreement", "max_abs_error", "snr_db", "samples")},
        "instructions": run.instructions,
    }


def _dynamic_dims(project, target, spec) -> tuple:
    if not spec.dynamic:
        return ()
    return tuple(target.dynamic_dims if target.dynamic_dims is not None else project.model.dynamic_dims)


def _check_dynamic(runner, artifact: Path, fmt: str, dims, model, eval_x: np.ndarray, input_shape) -> list[dict]:
    """Run the artifact at two sizes of every dynamic dim and compare with the torch model
    on the same inputs: the batch dim on real evaluation samples, other dims on fixed
    pseudo-random inputs of that size. A size the runtime refuses fails the build (exit 3)."""
    from edgepack.compress.evaluate import predict

    rng = np.random.default_rng(0)
    checks = []
    for d in dims:
        for size in sorted({d.min, min(d.max, max(d.min + 1, 7))}):
            shape = list(input_shape)
            shape[d.dim] = size
            if d.dim == 0 and size <= len(eval_x) and tuple(eval_x.shape[1:]) == tuple(shape[1:]):
                x = np.ascontiguousarray(eval_x[:size])
            else:
                x = rng.standard_normal(shape).astype(np.float32)
            from edgepack.errors import ToolchainError

            try:
                run = runner.run(artifact, fmt, x, warmup=0, iterations=1, threads=1, batch=shape[0])
            except ToolchainError as e:
                raise ToolchainError(f"{fmt}: {artifact.name} was exported with dynamic {d.name} in [{d.min}, {d.max}] "
                                     f"but fails at {d.name}={size}: {e}", format=fmt, stage="verify") from e
            ref = predict(model, x, declared_batch=shape[0])
            if run.outputs.shape != ref.shape:
                raise ToolchainError(f"{fmt}: {artifact.name} with {d.name}={size} returned shape {list(run.outputs.shape)}, "
                                     f"the model {list(ref.shape)}", format=fmt, stage="verify")
            checks.append({"dim": d.dim, "name": d.name, "size": size, "input_shape": shape,
                           "max_abs_error": float(np.max(np.abs(run.outputs - ref))),
                           "agreement": float(np.mean(run.outputs.reshape(len(ref), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)))})
    return checks


def _check_teachers(recipe, model, load_model, example: np.ndarray) -> None:
    """Load every distillation teacher and compare its output shape with the model's
    before the first stage runs: a bad teacher fails the build before any work."""
    import torch

    with torch.no_grad():
        expected = tuple(model(torch.from_numpy(example)).shape)
        for spec in recipe.stages:
            for t in getattr(spec.config, "teachers", ()) or ():
                if t.model == "original":
                    continue
                teacher = load_model(t.model, t.weights)
                try:
                    got = tuple(teacher(torch.from_numpy(example)).shape)
                except Exception as e:
                    raise ConfigError(f"stage {spec.index} (distill): teacher {t.model!r} fails on an input of shape "
                                      f"{list(example.shape)}: {type(e).__name__}: {e}") from None
                if got != expected:
                    raise ConfigError(f"stage {spec.index} (distill): teacher {t.model!r} outputs {list(got)}, "
                                      f"the model {list(expected)}; a teacher must predict the same classes")


def _compress(plan: BuildPlan, source, evaluation, say):
    """Run the recipe's model stages (None when it has none)."""
    import copy

    from edgepack.compress.engine import run_stages
    from edgepack.passes.base import Dataset, PassContext
    from edgepack.sources.data import load_split
    from edgepack.sources.pytorch import build_untrained, load_factory_model

    recipe, project, pdir = plan.recipe, plan.project, plan.project_dir
    if not recipe.stages:
        return None
    training = load_split(pdir, project, "training") if project.data.training else None
    if project.data.validation:
        validation, evaluated_on = load_split(pdir, project, "validation"), "validation"
    else:
        validation, evaluated_on = evaluation, "evaluation (the project has no data.validation hook)"

    def load_model(ref: str, weights: str | None = None):
        if ref == "original":
            return copy.deepcopy(source.module).eval()
        if not weights:
            raise ConfigError(f"model {ref!r}: no weights given; name a .safetensors file next to it")
        return load_factory_model(pdir, ref, (pdir / weights).resolve(), what=f"model {ref!r}")

    def build_fresh(base: str):
        return build_untrained(pdir, project.model.factory if base == "original" else base, what="model.factory")

    _check_teachers(recipe, source.module, load_model, np.zeros(project.model.input_shape, np.float32))
    ctx = PassContext(
        training=Dataset(training.x, training.y) if training else None,
        validation=Dataset(validation.x, validation.y),
        load_model=load_model,
        example=np.zeros(project.model.input_shape, np.float32),
        seed=project.compress.seed,
        threads=project.build.threads,
        progress=say,
    )
    cache = pdir / project.compress.cache_dir / "stages"
    return run_stages(recipe, model=copy.deepcopy(source.module), source_key=f"{source.sha256}:{project.model.factory or project.model.program}",
                      project_dir=pdir, factory=project.model.factory, build_fresh=build_fresh if project.model.factory else None, ctx=ctx,
                      evaluate_on=Dataset(validation.x, validation.y), evaluated_on=evaluated_on,
                      cache_dir=cache, progress=say)


def build(plan: BuildPlan, *, progress: Progress | None = None) -> BuildResult:
    """Export, verify and measure every artifact of every target in the plan, and write
    each target's dist folder. Raises EdgepackError subclasses for bad input (exit 2) and
    toolchain failures (exit 3); budget failures are reported in the result (exit 1)."""
    from edgepack._quiet import quiet_toolchains

    quiet_toolchains()
    say = progress or (lambda msg: None)
    started = time.perf_counter()

    from edgepack.devices.host import HostRunner
    from edgepack.exporters import ExportRequest, export
    from edgepack.release.dist import staged_folder
    from edgepack.release.manifest import TEST_VECTOR_SAMPLES, complete_dist
    from edgepack.release.toolchain import toolchain_versions
    from edgepack.sources.data import load_split
    from edgepack.sources.pytorch import check_forward, load_source
    from edgepack.verify.metrics import compare

    project, pdir = plan.project, plan.project_dir
    say("loading the source model and data")
    source = load_source(pdir, project)
    check_forward(source, project)
    calibration = load_split(pdir, project, "calibration")
    evaluation = load_split(pdir, project, "evaluation")
    calib_x = calibration.x[: plan.recipe.quantize.calibration_samples or project.data.calibration_samples]

    original_outputs = _predict(source.module, evaluation.x, project.model.input_shape[0])
    original_accuracy = float(np.mean(original_outputs.argmax(1) == evaluation.y))
    compressed = _compress(plan, source, evaluation, say)
    model = compressed.model if compressed else source.module
    # Parity is checked against the fp32 torch model the artifacts were exported from;
    # the accuracy budget is against the original model.
    reference = original_outputs if compressed is None else _predict(model, evaluation.x, project.model.input_shape[0])

    if compressed is None:  # the table still shows what the model costs and scores
        from edgepack.compress.engine import original_row
        from edgepack.compress.evaluate import measure

        stage_rows = [original_row(measure(model, evaluation.x, evaluation.y,
                                           np.zeros(project.model.input_shape, np.float32)).as_dict())]
    else:
        stage_rows = list(compressed.rows)
    from edgepack.devices.costs import model_costs

    costs = model_costs(model, np.zeros(project.model.input_shape, np.float32))
    runner = HostRunner()
    emulated: dict[tuple[str, str, str], dict] = {}   # (format, precision, qemu cpu) -> measurement
    if plan.runner == "qemu":
        from edgepack.devices import sysroot

        if sysroot.find_env() is None:
            say("preparing the emulated aarch64 environment (once; cached)")
            sysroot.setup(progress=False)
    settings = project.build
    toolchain = toolchain_versions()
    exported: dict[tuple[str, str], object] = {}  # one export per (format, precision), shared by targets
    measured: dict[tuple[str, str], tuple[dict, dict]] = {}
    recorded: dict[tuple[str, str], np.ndarray] = {}  # outputs replayed by `edgepack verify --run`
    results = []
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as work:
        work = Path(work)
        for tp in plan.targets:
            arts = []
            for spec in tp.target.artifacts:
                dims = _dynamic_dims(project, tp.target, spec)
                key = (spec.format, spec.precision, tuple((d.dim, d.name, d.min, d.max) for d in dims))
                file_name = tp.files[(spec.format, spec.precision)]
                if key not in exported:
                    say(f"exporting {spec.format} {spec.precision}")
                    out = work / f"{spec.format}-{spec.precision}-{len(exported)}" / file_name
                    out.parent.mkdir(parents=True)
                    exported[key] = export(spec.format, ExportRequest(
                        module=model, example=np.zeros(project.model.input_shape, np.float32),
                        calibration=calib_x, precision=spec.precision, out_path=out,
                        input_name=project.model.input_name, output_name=project.model.output_name,
                        parent_sha256=source.sha256, quantize=plan.recipe.quantize, dynamic_dims=dims,
                    ))
                    say(f"verifying {spec.format} {spec.precision} on {len(evaluation)} samples")
                    run = runner.run(exported[key].path, spec.format, evaluation.x,
                                     warmup=settings.warmup, iterations=settings.iterations, threads=settings.threads)
                    parity = compare(reference, run.outputs, evaluation.y).as_dict()
                    parity["reference_accuracy"] = original_accuracy
                    parity["accuracy_drop_pt"] = (original_accuracy - parity["accuracy"]) * 100.0
                    if dims:
                        say(f"checking {spec.format} {spec.precision} at two sizes of each dynamic dim")
                        parity["dynamic_check"] = _check_dynamic(runner, exported[key].path, spec.format, dims, model,
                                                                 evaluation.x, project.model.input_shape)
                    measured[key] = (parity, run.latency_dict())
                    recorded[key] = run.outputs[:TEST_VECTOR_SAMPLES]
                artifact = exported[key]
                parity, latency = measured[key]
                measurements = []
                if plan.runner == "qemu":
                    ekey = (key, tp.device.qemu_cpu)
                    if ekey not in emulated:
                        say(f"running {spec.format} {spec.precision} under qemu ({tp.device.qemu_cpu})")
                        emulated[ekey] = _emulate(tp.device, artifact.path, spec.format, evaluation, reference, settings)
                    measurements.append({"device": tp.device.name, **emulated[ekey]})
                    from edgepack.devices.latency import estimate_row

                    row = estimate_row(tp.device, instructions=emulated[ekey]["instructions"], artifact_bytes=artifact.size_bytes,
                                       precision=spec.precision, activation_elements=costs.activation_elements,
                                       threads=settings.threads, calibration=plan.latency_calibration)
                    if row:
                        measurements.append(row)
                from edgepack.devices.latency import int8_warnings

                emulated_row = next((m for m in measurements if m.get("method") == "emulated"), {})
                arts.append(ArtifactResult(
                    format=spec.format, precision=spec.precision, file=file_name,
                    sha256=artifact.sha256, size_bytes=artifact.size_bytes,
                    fp32_reference_bytes=source.fp32_bytes, parity=parity, latency_ms=latency,
                    export_seconds=round(artifact.export_seconds, 2), details=artifact.details,
                    measurements=tuple(measurements), key=key,
                    warnings=tuple(int8_warnings(tp.device, precision=spec.precision, export_details=artifact.details,
                                                 instructions=emulated_row.get("instructions"))),
                ))
            failures = [f for a in arts for f in _gate(tp, a)]
            from edgepack.devices.latency import calibration_record, latency_gate

            estimates = {a.file: next((m for m in a.measurements if m.get("method") == "estimated"), None) for a in arts}
            for a in arts:
                failures += latency_gate(a.file, tp.device, estimates[a.file], tp.target.budgets.max_latency_ms)
            if tp.target.budgets.max_latency_ms is None:
                latency_gate_note = "no latency budget"
            elif all(estimates.values()):
                latency_gate_note = f"gated on estimates for {tp.device.name} (instructions counted on {tp.device.qemu_cpu})"
            else:
                latency_gate_note = (f"not gated: host latency is not {tp.device.name} latency; build with --runner qemu "
                                     f"(or run edgepack profile) to estimate it")
            manifest = {
                "schema": MANIFEST_SCHEMA,
                "project": {"name": project.project.name, "version": project.project.version},
                "target": tp.target.name,
                "device_profile": tp.device.name,
                "source": {
                    "sha256": source.sha256,
                    "file": source.path.name,
                    "parameters": source.parameters,
                    "fp32_weight_bytes": source.fp32_bytes,
                    "input_shape": list(project.model.input_shape),
                    "activation_elements": costs.activation_elements,
                    "input_name": project.model.input_name,
                    "output_name": project.model.output_name,
                },
                "evaluation": {"split": "evaluation", "samples": len(evaluation),
                               "reference_accuracy": round(original_accuracy, 6),
                               "compressed_accuracy": round(float(np.mean(reference.argmax(1) == evaluation.y)), 6)},
                "recipe": plan.recipe.as_dict(),
                "stages": [r.as_dict() for r in stage_rows],
                "stages_evaluated_on": compressed.evaluated_on if compressed else "evaluation",
                "calibration": {"samples": int(len(calib_x))},
                "latency_calibration": calibration_record(plan.latency_calibration, tp.device),
                "toolchain": toolchain,
                "budgets": tp.target.budgets.model_dump(),
                "gates": {"passed": not failures, "failures": failures,
                          "latency": latency_gate_note},
                "artifacts": [a.manifest_entry() for a in arts],
            }
            name = tp.target.name if not failures else f"{tp.target.name}.rejected"
            final = plan.output_dir / name
            say(f"writing {final}")
            with staged_folder(final) as staging:
                for a in arts:
                    shutil.copyfile(exported[a.key].path, staging / a.file)
                manifest = complete_dist(
                    staging, manifest, project_dir=pdir, description=project.project.description,
                    calibration_x=calib_x, evaluation_x=evaluation.x, evaluation_y=evaluation.y, reference=reference,
                    outputs={a.file: recorded[a.key] for a in arts},
                    artifact_paths={a.file: staging / a.file for a in arts},
                )
            if not failures:  # a stale rejected build would contradict this one
                shutil.rmtree(plan.output_dir / f"{tp.target.name}.rejected", ignore_errors=True)
            results.append(TargetResult(
                target=tp.target.name, device=tp.device.name,
                dist=None if failures else final, rejected=final if failures else None,
                manifest=manifest, failures=tuple(failures), artifacts=tuple(arts),
            ))
    return BuildResult(project.project.name, tuple(results), time.perf_counter() - started)


# --------------------------------------------------------------------------- releases
# Thin entry points into edgepack.release; each imports its module when called, so
# importing this API (and `edgepack --help`) loads no crypto or plotting library.

from edgepack.release.diff import Thresholds  # noqa: E402  (a plain dataclass, no heavy imports)


def dist_folder(project_dir: Path, target: str, output_dir: Path | None = None) -> Path:
    """dist/<target>/ as `build` wrote it: under `output_dir` when given, else under the
    project's build.output_dir."""
    if output_dir is None:
        from edgepack.config.loader import load_project

        output_dir = project_dir.resolve() / load_project(project_dir.resolve()).build.output_dir
    return output_dir.resolve() / target


def package(dist: Path, *, archive: Path | None = None, sign_key: Path | None = None, against: Path | None = None,
            thresholds: Thresholds | None = None, reproducible: bool = False):
    from edgepack.release.packaging import package as _package

    return _package(dist, archive=archive, sign_key=sign_key, against=against, thresholds=thresholds,
                    reproducible=reproducible)


def verify(archive: Path, *, public_key: Path | None = None, run: bool = False):
    from edgepack.release.verification import verify as _verify

    return _verify(archive, public_key=public_key, run=run)


def keygen(stem: Path, *, force: bool = False):
    from edgepack.release.signing import keygen as _keygen

    return _keygen(stem, force=force)


def diff(old: Path, new: Path, thresholds: Thresholds | None = None):
    from edgepack.release.diff import diff_paths

    return diff_paths(old, new, thresholds or Thresholds())
