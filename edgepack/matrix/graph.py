"""A matrix planned as a graph of pipeline steps, before any work.

Per (project, recipe), however many entries and targets name it:
  - `prepare`: load, capture and compress once; the capture and every compression stage
    land in the project's content-addressed caches (.edgepack-cache);
  - `export`: one per distinct artifact (export key: format, precision, dims, delegate,
    quantize options), after prepare; it lands in the export cache, keyed by the model's
    state, the calibration data and the toolchain;
  - `build`: every target of the pair, after its exports: it reuses them, verifies,
    measures, gates and writes each target's dist.
A step's id is the hash of what it is asked to do, so the same work named twice is one
step. Every plan is made (and every problem in every project reported) before a step runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.errors import ConfigError
from edgepack.matrix.spec import PROJECT_RECIPE, MatrixFile

# Converters are memory-hungry: what one step may take, for the local pool's bound and
# Ray's scheduler (an EfficientNet-class LiteRT int8 export peaks near 3 GB).
STEP_MEMORY_GB = {"prepare": 2.0, "export": 3.0, "build": 3.0}


@dataclass(frozen=True)
class Step:
    id: str
    kind: str                      # prepare | export | build
    label: str                     # for progress lines and the result: "digits/int8: export tflite int8"
    doc: dict                      # what steps.run_step needs; JSON
    deps: tuple[str, ...] = ()
    memory_gb: float = 2.0
    cpus: int = 1


@dataclass(frozen=True)
class BuildSpec:
    """One (project, recipe) and the targets built for it."""

    project: str                   # the project's name
    project_dir: Path
    recipe: str
    targets: tuple[str, ...]
    output_dir: Path
    step: str                      # the id of its build step


@dataclass
class MatrixPlan:
    matrix_file: Path
    output_dir: Path
    retries: int
    steps: dict[str, Step] = field(default_factory=dict)
    builds: list[BuildSpec] = field(default_factory=list)

    def add(self, step: Step) -> str:
        self.steps.setdefault(step.id, step)
        return step.id

    def order(self) -> list[Step]:
        """The steps with every step after its dependencies."""
        done: set[str] = set()
        out: list[Step] = []

        def visit(sid: str) -> None:
            if sid in done:
                return
            done.add(sid)
            for d in self.steps[sid].deps:
                visit(d)
            out.append(self.steps[sid])

        for sid in self.steps:
            visit(sid)
        return out

    def as_dict(self) -> dict:
        return {"schema": "edgepack.matrix-plan/1", "matrix_file": str(self.matrix_file),
                "output_dir": str(self.output_dir),
                "steps": [{"id": s.id, "kind": s.kind, "label": s.label, "deps": list(s.deps)} for s in self.order()],
                "builds": [{"project": b.project, "recipe": b.recipe, "targets": list(b.targets),
                            "output_dir": str(b.output_dir)} for b in self.builds]}


def _step_id(kind: str, doc: dict) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, **doc}, sort_keys=True).encode()).hexdigest()[:20]


def plan_matrix(path: Path, matrix: MatrixFile, *, target_dirs: list[Path] = (), profile_dirs: list[Path] = ()) -> MatrixPlan:
    from edgepack.config.loader import load_project, targets_catalog
    from edgepack.pipeline.export import export_key
    from edgepack.plan import make_plan

    base = path.resolve().parent
    settings = matrix.matrix
    out = (base / settings.output_dir).resolve()
    plan = MatrixPlan(path.resolve(), out, settings.retries)
    # (project dir, recipe) -> targets, in the order entries name them
    pairs: dict[tuple[Path, str], list[str]] = {}
    problems: list[str] = []
    for i, entry in enumerate(matrix.entries):
        project_dir = (base / entry.project).resolve()
        if not (project_dir / "edgepack.toml").is_file():
            problems.append(f"{path}: entries[{i}].project: {project_dir} has no edgepack.toml")
            continue
        try:
            project = load_project(project_dir)
        except ConfigError as e:
            problems.extend(e.problems or [str(e)])
            continue
        if entry.targets is None:
            names = list(project.build.targets)
        elif "*" in entry.targets:
            names = targets_catalog(project_dir, [Path(d) for d in target_dirs]).names()
        else:
            names = list(entry.targets)
        for recipe in entry.recipes:
            have = pairs.setdefault((project_dir, recipe), [])
            have.extend(n for n in names if n not in have)
    for (project_dir, recipe), targets in pairs.items():
        try:
            bp = make_plan(project_dir, targets=targets, runner=settings.runner,
                           target_dirs=list(target_dirs), profile_dirs=list(profile_dirs),
                           recipe=None if recipe == PROJECT_RECIPE else recipe, latency_gate=settings.latency_gate)
        except ConfigError as e:
            problems.extend(e.problems or [str(e)])
            continue
        name = bp.project.project.name
        output_dir = out / name / recipe
        base_doc = {"project": str(project_dir), "recipe": None if recipe == PROJECT_RECIPE else recipe,
                    "runner": settings.runner, "latency_gate": settings.latency_gate,
                    "target_dirs": [str(Path(d).resolve()) for d in target_dirs],
                    "profile_dirs": [str(Path(d).resolve()) for d in profile_dirs]}
        who = f"{name}/{recipe}"
        prepare = plan.add(Step(_step_id("prepare", base_doc), "prepare", f"{who}: prepare",
                                {**base_doc, "targets": targets}, memory_gb=STEP_MEMORY_GB["prepare"]))
        exports: list[str] = []
        quantize = bp.recipe.quantize
        # With keep_float = "auto" or tune_ranges the int8 choices are made by the build
        # from its own analysis: the exports are then the build step's.
        if not quantize.decided_by_build:
            seen = set()
            for tp in bp.targets:
                for spec in tp.target.artifacts:
                    key = export_key(bp.project, tp.target, spec, quantize)
                    if key in seen:
                        continue
                    seen.add(key)
                    doc = {**base_doc, "targets": [tp.target.name], "export": {"target": tp.target.name,
                           "format": spec.format, "precision": spec.precision}, "key": repr(key)}
                    exports.append(plan.add(Step(_step_id("export", doc), "export",
                                                 f"{who}: export {spec.format} {spec.precision}"
                                                 f"{'' if spec.delegate in (None, 'xnnpack') else ' (' + spec.delegate + ')'}",
                                                 doc, deps=(prepare,), memory_gb=STEP_MEMORY_GB["export"])))
        doc = {**base_doc, "targets": targets, "output_dir": str(output_dir)}
        build = plan.add(Step(_step_id("build", doc), "build", f"{who}: build {', '.join(targets)}", doc,
                              deps=(prepare, *exports), memory_gb=STEP_MEMORY_GB["build"]))
        plan.builds.append(BuildSpec(name, project_dir, recipe, tuple(targets), output_dir, build))
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems in the matrix"
        raise ConfigError(head, problems=problems)
    return plan
