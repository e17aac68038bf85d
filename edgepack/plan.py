"""The build plan: everything a build will do, resolved and validated before any work.

Problems from every file are gathered and reported together, each naming its file and
field, so a user fixes them in one round instead of one per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.compress.recipe import ResolvedRecipe, resolve_recipe
from edgepack.config.loader import load_project, profiles_catalog, targets_catalog
from edgepack.config.schema import DeviceProfile, Project, Target
from edgepack.errors import ConfigError
from edgepack.formats import get_format


@dataclass(frozen=True)
class TargetPlan:
    target: Target
    device: DeviceProfile
    files: dict[tuple[str, str], str]   # (format, precision) -> file name in dist
    skipped: tuple = ()                 # unreachable.Unreachable: artifacts left out by [build] skip_unreachable


@dataclass(frozen=True)
class BuildPlan:
    project_dir: Path
    project: Project
    targets: tuple[TargetPlan, ...]
    output_dir: Path
    runner: str
    recipe: ResolvedRecipe
    latency_calibration: Path | None = None   # the calibration file latency estimates use; never implicit
    reuse_exports: bool = True                # identical exports of earlier builds (pipeline.export_cache)
    latency_gate: bool = True                 # False: max_latency_ms waived (--no-latency-gate), said in the manifest

    def as_dict(self) -> dict:
        src = self.project.model
        return {
            "schema": "edgepack.plan/1",
            "project": self.project.project.name,
            "project_dir": str(self.project_dir),
            "task": self.project.data.task,
            "source": {"kind": src.kind, "factory": src.factory, "weights": src.weights, "program": src.program,
                       "keras": src.keras, "onnx": src.onnx,
                       "saved_model": src.saved_model, "signature": src.signature,
                       "input_shape": list(src.input_specs[0].shape),
                       "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in src.input_specs],
                       "outputs": list(src.output_names)},
            "output_dir": str(self.output_dir),
            "runner": self.runner,
            "recipe": self.recipe.as_dict(),
            "latency_calibration": str(self.latency_calibration) if self.latency_calibration else None,
            "latency_gate": self.latency_gate,
            "reuse_exports": self.reuse_exports,
            "targets": [
                {
                    "name": tp.target.name,
                    "device": tp.device.name,
                    "dist": str(self.output_dir / tp.target.name),
                    "artifacts": [
                        {"format": a.format, "precision": a.precision, "delegate": a.delegate,
                         "file": tp.files[(a.format, a.precision)]}
                        for a in tp.target.artifacts
                    ],
                    "budgets": tp.target.budgets.model_dump(),
                    **({"skipped_artifacts": [u.manifest_entry() for u in tp.skipped]} if tp.skipped else {}),
                }
                for tp in self.targets
            ],
        }


def artifact_file_names(project_name: str, target: Target) -> dict[tuple[str, str], str]:
    """`digits.tflite` when a format is emitted once, `digits-fp32.tflite` and
    `digits-int8.tflite` when a target asks for several precisions of one format."""
    counts: dict[str, int] = {}
    for a in target.artifacts:
        counts[a.format] = counts.get(a.format, 0) + 1
    return {
        (a.format, a.precision): f"{project_name}{'' if counts[a.format] == 1 else '-' + a.precision}{get_format(a.format).extension}"
        for a in target.artifacts
    }


def _project_file_problems(project_dir: Path, project: Project) -> list[str]:
    problems = []
    where = project_dir / "edgepack.toml"
    m = project.model
    for field, value in (("model.weights", m.weights), ("model.program", m.program), ("model.keras", m.keras),
                         ("model.onnx", m.onnx)):
        if value and not (project_dir / value).exists():
            problems.append(f"{where}: {field}: {project_dir / value} not found")
    hooks = [("model.factory", m.factory), ("model.custom_objects", m.custom_objects)] + [(f"data.{k}", getattr(project.data, k)) for k in ("calibration", "evaluation", "training")]
    for field, spec in hooks:
        if spec and not (project_dir / spec.rsplit(":", 1)[0]).is_file():
            problems.append(f"{where}: {field}: {project_dir / spec.rsplit(':', 1)[0]} not found")
    return problems


def _target_dims_problems(where, target: Target, project: Project) -> list[str]:
    """A target's dynamic_dims replace every input's: each must lie inside every input."""
    return [f"{where}: dynamic_dims: dim {d.dim} ({d.name}) is outside input {i.name!r} of shape {list(i.shape)}"
            for d in target.dynamic_dims or () for i in project.model.input_specs if d.dim >= len(i.shape)]


# Rewrites that trace or rewire the graph from one example tensor; they do not take a
# model with several inputs yet (the passes that only train, distill and cluster do).
_SINGLE_INPUT_PASSES = ("prune", "reorganize")


def _single_input_only(resolved) -> list[str]:
    found = [f"{resolved.source}: stage {s.index} ({s.pass_name})" for s in resolved.stages
             if s.pass_name in _SINGLE_INPUT_PASSES]
    q = resolved.quantize
    found += [f"{resolved.source}: quantize.{name}" for name in ("equalize", "bias_correction") if getattr(q, name)]
    # The per-layer int8 sensitivity, the keep_float search and range tuning feed one example tensor.
    if q.analyses_sensitivity:
        option = 'keep_float = "auto"' if q.auto_keep_float else "sensitivity"
        found.append(f"{resolved.source}: quantize.{option}")
    if q.tune_ranges:
        found.append(f"{resolved.source}: quantize.tune_ranges")
    return [f"{where}: takes single-input models only; this model declares several [[model.inputs]]" for where in found]


def make_plan(project_dir: Path, *, targets: list[str] | None = None, output_dir: Path | None = None,
              runner: str = "host", target_dirs: list[Path] = (), profile_dirs: list[Path] = (),
              recipe: str | None = None, latency_calibration: Path | None = None,
              reuse_exports: bool = True, latency_gate: bool = True) -> BuildPlan:
    """Resolve and validate everything a build needs. `target_dirs` and `profile_dirs`
    add folders of targets and device profiles (after the built-in and project ones).
    `latency_calibration` (relative to the working folder) overrides the project's
    `[build] latency_calibration` (relative to the project). `latency_gate=False` waives
    every target's `max_latency_ms` (the manifest says so)."""
    project_dir = project_dir.resolve()
    project = load_project(project_dir)
    problems = _project_file_problems(project_dir, project)
    tcat = targets_catalog(project_dir, [Path(d) for d in target_dirs])
    pcat = profiles_catalog(project_dir, [Path(d) for d in profile_dirs])
    for flag, dirs in (("--target-dir", target_dirs), ("--profile-dir", profile_dirs)):
        problems.extend(f"{flag} {d}: no such folder" for d in dirs if not Path(d).is_dir())
    from edgepack.verify.tasks import budget_problems, gated_metric_problems, output_names

    problems.extend(budget_problems(project, project.budgets, where=str(project_dir / "edgepack.toml")))
    plans = []
    for name in targets or list(project.build.targets):
        try:
            target = tcat.load(name)
        except ConfigError as e:
            problems.extend(e.problems or [str(e)])
            continue
        try:
            device = pcat.load(target.device)
        except ConfigError as e:
            problems.extend(e.problems or [f"{tcat.path(name)}: device: {e}"])
            continue
        problems.extend(_target_dims_problems(tcat.path(name), target, project))
        # A target's own gated metric and per-output budgets must fit this project too
        # (the project's were checked above); its budgets for other tasks are not applied.
        if "gated_metric" not in project.budgets.given():
            problems.extend(gated_metric_problems(project, target.budgets, where=str(tcat.path(name))))
        problems.extend(f"{tcat.path(name)}: budgets.outputs.{o}: the model has no output {o!r}; outputs: "
                        f"{', '.join(output_names(project))}" for o in target.budgets.outputs if o not in output_names(project))
        budgets = project.budgets.apply_to(target.budgets)
        if budgets is not target.budgets:
            target = target.model_copy(update={"budgets": budgets})
        plans.append(TargetPlan(target, device, artifact_file_names(project.project.name, target)))
    resolved = None
    try:
        resolved = resolve_recipe(project_dir, project, recipe=recipe)
        from edgepack.compress.engine import check_training_available

        check_training_available(resolved.stages, project.data.training is not None, str(project_dir / "edgepack.toml"),
                                 project.data.task)
    except ConfigError as e:
        problems.extend(e.problems or [str(e)])
    if resolved is not None and resolved.quantize.activations == "symmetric":
        # The PT2E quantizers of XNNPACK and LiteRT use affine int8 activations only.
        for tp in plans:
            for a in tp.target.artifacts:
                if a.format in ("tflite", "executorch") and a.precision == "int8":
                    problems.append(f"{resolved.source}: quantize.activations: 'symmetric' is not available for {a.format} "
                                    f"(target {tp.target.name}); its quantizer uses asymmetric int8 activations. Valid for onnx only")
    if resolved is not None and len(project.model.input_specs) > 1 and project.model.kind == "pytorch":
        problems.extend(_single_input_only(resolved))
    from edgepack.sources.foreign import plan_problems as foreign_source_problems

    problems.extend(foreign_source_problems(project, resolved, str(project_dir / "edgepack.toml")))
    if resolved is not None:
        plans = _leave_out_unreachable(plans, resolved, project, tcat, problems)
    calibration, calibration_problems = _latency_calibration(project_dir, project, latency_calibration, plans)
    problems.extend(calibration_problems)
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems in the build plan"
        raise ConfigError(head, problems=problems)
    out = output_dir if output_dir is not None else project_dir / project.build.output_dir
    return BuildPlan(project_dir, project, tuple(plans), out.resolve(), runner, resolved, calibration, reuse_exports,
                     latency_gate)


def _leave_out_unreachable(plans: list[TargetPlan], resolved, project: Project, tcat, problems: list[str]):
    """Each target without the artifacts this project cannot reach (with skip_unreachable),
    or a plan problem per such artifact (without)."""
    from edgepack.unreachable import plan_problem, unreachable_artifacts

    out = []
    for tp in plans:
        found = unreachable_artifacts(tp.target.artifacts, resolved.quantize, project.model.kind)
        if not found:
            out.append(tp)
        elif not project.build.skip_unreachable:
            problems.extend(plan_problem(str(tcat.path(tp.target.name)), tp.target.name, u) for u in found)
        elif len(found) == len(tp.target.artifacts):
            problems.append(f"{tcat.path(tp.target.name)}: target {tp.target.name}: every artifact it lists is unreachable "
                            f"from this project ({found[0].reason}); nothing would be built")
        else:
            left_out = {(u.format, u.precision) for u in found}
            target = tp.target.model_copy(update={"artifacts": tuple(a for a in tp.target.artifacts
                                                                     if (a.format, a.precision) not in left_out)})
            out.append(TargetPlan(target, tp.device, tp.files, tuple(found)))
    return out


def _latency_calibration(project_dir: Path, project: Project, flag: Path | None,
                         plans: list[TargetPlan]) -> tuple[Path | None, list[str]]:
    """The calibration file a build was given, checked: readable, and for the device
    profile of at least one target (it is applied to those targets only)."""
    from edgepack.devices.estimate import read_calibration_profile

    if flag is not None:
        path, where = Path(flag).resolve(), "--latency-calibration"
    elif project.build.latency_calibration:
        path, where = (project_dir / project.build.latency_calibration).resolve(), f"{project_dir / 'edgepack.toml'}: build.latency_calibration"
    else:
        return None, []
    if not path.is_file():
        return None, [f"{where}: {path} not found; `edgepack profile --runner ssh|adb --latency-calibration FILE` writes one"]
    try:
        profile = read_calibration_profile(path)
    except ConfigError as e:
        return None, [f"{where}: {e}"]
    devices = sorted({tp.device.name for tp in plans})
    if plans and profile not in devices:
        return None, [f"{where}: {path.name} calibrates device profile {profile!r}; the targets' profiles are {', '.join(devices)}"]
    try:
        problems = _calibration_mismatches(path, profile, project, plans)
    except ConfigError as e:
        return None, [f"{where}: {e}"]
    return (None, [f"{where}: {p}" for p in problems]) if problems else (path, [])


def _calibration_mismatches(path: Path, profile: str, project: Project, plans: list[TargetPlan]) -> list[str]:
    """A calibration is applied per format, precision and thread count. Refused: a file
    measured at another thread count than this build estimates an artifact at (its
    factor would describe the thread count, not the device), and a file matching none of
    the build's artifacts (it would change nothing while the manifest names it)."""
    from edgepack.devices.estimate import describe_key, fastest_cluster, load_calibration

    cal = load_calibration(profile, path=path)
    problems, matched, wanted = [], False, []
    for tp in plans:
        if tp.device.name != profile:
            continue
        threads = min(project.build.threads, fastest_cluster(tp.device).count)
        for a in tp.target.artifacts:
            key = (a.format, a.precision, threads)
            wanted.append(describe_key(*key))
            if cal.matching(*key):
                matched = True
                continue
            elsewhere = sorted({m.threads for m in cal.measurements if (m.format, m.precision) == key[:2]})
            if elsewhere:
                at = ", ".join(map(str, elsewhere))
                problems.append(f"{path.name} measured {a.format} {a.precision} at {at} thread(s), but this build "
                                f"estimates it at {threads} ([build] threads = {project.build.threads}, target "
                                f"{tp.target.name}): profile with --threads {threads}, or build with threads = {at}")
    if not problems and not matched and plans:
        held = ", ".join(describe_key(*k) for k in cal.keys()) or "no measurements"
        problems.append(f"{path.name} holds {held}; none matches this build's estimates "
                        f"({', '.join(sorted(set(wanted)))})")
    return problems
