"""Running a recipe's stages in order: each stage's output is evaluated on held-out data
and gated, and cached by a hash of everything it depends on (compress.cachekey) so a
second target, or a re-run after changing only the target, reuses the compression."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgepack.compress import cachekey, diagnose, snapshot
from edgepack.compress.evaluate import StageMetric, measure, predict
from edgepack.compress.recipe import ResolvedRecipe, StageSpec
from edgepack.errors import BudgetError, ConfigError
from edgepack.passes.base import Dataset, PassContext


@dataclass(frozen=True)
class StageRow:
    stage: int
    name: str
    pass_name: str
    metrics: dict
    seconds: float
    cache: str                  # "hit", "miss", "off" (not cacheable) or "-" (the original)
    drop_pt: float              # vs the stage before
    total_drop_pt: float        # vs the original
    report: dict
    notes: tuple[str, ...] = ()  # what did not go the usual way (an unreadable cache entry, ...)

    def as_dict(self) -> dict:
        return {"stage": self.stage, "name": self.name, "pass": self.pass_name,
                "kind": "source" if self.stage == 0 else self.pass_name,
                "size_bytes": self.metrics["fp32_bytes"], **self.metrics,
                "seconds": round(self.seconds, 2), "cache": self.cache, "drop_pt": round(self.drop_pt, 4),
                "total_drop_pt": round(self.total_drop_pt, 4), "report": self.report,
                "notes": [*self.notes, *self.metrics.get("notes", ())]}


class StageBudgetError(BudgetError):
    """A stage cost more accuracy than its budget; the rows so far explain the numbers."""

    def __init__(self, message: str, rows: list[StageRow], evaluated_on: str):
        self.rows = rows
        self.evaluated_on = evaluated_on
        super().__init__(message)


@dataclass(frozen=True)
class Compressed:
    model: object
    rows: tuple[StageRow, ...]
    evaluated_on: str


def original_row(metrics: dict) -> StageRow:
    return StageRow(0, "original", "-", metrics, 0.0, "-", 0.0, 0.0, {})


def _array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _shapes(example) -> tuple:
    """The example's shape, or each input's shape (and dtype) for a model with several."""
    if isinstance(example, tuple):
        return tuple((tuple(a.shape), str(a.dtype)) for a in example)
    return tuple(example.shape)


def stage_key(parent_key: str, spec: StageSpec, *, data_digest: str, ctx: PassContext, project_dir: Path,
              tools: dict | None = None) -> str:
    """The cache key of `spec`'s output when its input has key `parent_key`."""
    return cachekey.stage_key(
        parent_key, pass_name=spec.pass_name, config=spec.config.model_dump(mode="json"),
        files=cachekey.files_digest(project_dir, spec.config.referenced_files()), data_digest=data_digest,
        seed=ctx.seed, threads=ctx.threads, example_shape=_shapes(ctx.example),
        tools=tools if tools is not None else cachekey.tool_versions())


def _needs_training(spec: StageSpec) -> bool:
    cfg = spec.config
    if spec.pass_name == "distill":
        return True
    return any(getattr(cfg, f, 0) for f in ("fine_tune_epochs",))


def check_training_available(stages, has_training: bool, where: str, task: str = "classification") -> None:
    needing = [s for s in stages if _needs_training(s)]
    if needing and task != "classification":
        # Fine-tuning and distillation train on class labels (cross-entropy, softened logits).
        names = ", ".join(f"stage {s.index} ({s.pass_name})" for s in needing)
        raise ConfigError(f"{where}: {names} train the model on class labels, which task {task!r} does not have; "
                          "stages that train need task = \"classification\" (set fine_tune_epochs = 0, or drop distill)")
    if needing and not has_training:
        names = ", ".join(f"stage {s.index} ({s.pass_name})" for s in needing)
        raise ConfigError(f"{where}: {names} train the model, but edgepack.toml has no data.training hook; add one ('data.py:training') or set fine_tune_epochs = 0")


def run_stages(
    recipe: ResolvedRecipe,
    *,
    model,
    source_key: str,
    project_dir: Path,
    factory: str | None,
    build_fresh: Callable[[str], object] | None,
    ctx: PassContext,
    evaluate_on: Dataset,
    evaluated_on: str,
    cache_dir: Path | None,
    progress: Callable[[str], None] = lambda m: None,
    scorer=None,
    gated: StageMetric | None = StageMetric("accuracy", "higher"),
) -> Compressed:
    """Run every model-changing stage. `source_key` identifies the source model's weights
    (or program), `factory` is the project's model.factory (None for a .pt2 program): its
    code is part of every key, since a cached stage is rebuilt on the factory's model.
    `build_fresh(base)` makes an untrained model of a base architecture ("original" or a
    student factory) for snapshots; None disables the cache. Each stage is scored by
    `scorer` (verify.tasks.Scorer; None: a classifier) and gated on `gated` (None: not
    gated, an unlabelled project without a metric to gate on)."""
    import torch

    from edgepack.passes import PASSES

    seed = ctx.seed
    torch.manual_seed(seed)
    example = ctx.example
    before = measure(model, evaluate_on.x, evaluate_on.y, example, scorer=scorer).as_dict()
    # Embeddings are scored against the original model's, on the same inputs.
    first_example = example[0] if isinstance(example, tuple) else example
    original_outputs = (predict(model, evaluate_on.x, declared_batch=first_example.shape[0], names=scorer.names)
                        if scorer is not None else None)
    rows = [original_row(before)]
    # The collapse diagnosis reads classification accuracy against chance; other tasks
    # (and unlabelled data) have neither.
    chance = diagnose.chance_accuracy(evaluate_on.y) if before["accuracy"] is not None else None
    collapses: list[str] = []  # "stage i (label): why", the first one explains a failed budget
    data_digest = _array_digest(*(a for d in (ctx.training, ctx.validation) if d is not None
                                  for a in (*(d.x if isinstance(d.x, tuple) else (d.x,)), d.y) if a is not None))
    tools = cachekey.tool_versions()
    key = cachekey.source_key(source_key, project_dir=project_dir, factory=factory)
    base = "original"
    current = model
    for spec in recipe.stages:
        key = stage_key(key, spec, data_digest=data_digest, ctx=ctx, project_dir=project_dir, tools=tools)
        student = getattr(spec.config, "student", None)
        stage_base = getattr(student, "model", None) or base
        started = time.perf_counter()
        folder = cache_dir / key[:32] if cache_dir is not None and build_fresh is not None else None
        cached, notes = None, []
        if folder is not None and (folder / "structure.json").is_file():
            try:
                cached, meta = snapshot.load(folder, lambda: build_fresh(stage_base))
                report = meta.get("report", {})
            except Exception as e:  # an unreadable cache entry is rebuilt, never trusted
                cached = None
                why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
                notes.append(f"cache entry {folder.name} was unreadable ({why}); the stage ran again and replaced it")
                progress(f"stage {spec.index} {spec.label}: cache entry unreadable, running again")
        if cached is not None:
            current, status = cached, "hit"
            progress(f"stage {spec.index} {spec.label}: reused from the cache")
        else:
            progress(f"stage {spec.index} {spec.label}: running")
            torch.manual_seed(seed + spec.index)
            result = PASSES[spec.pass_name]().run(current, spec.config, ctx)
            current, report = result.model.eval(), result.report
            status = "off"
            if folder is not None:
                status = _store(folder, current, build_fresh(stage_base), {"report": report, "base": stage_base, "key": key})
        # What a pass could not do, or left as it was, shows under the stage table.
        notes.extend(report.get("notes") or ())
        base = stage_base
        seconds = time.perf_counter() - started
        progress(f"stage {spec.index} {spec.label}: evaluating")
        metrics = measure(current, evaluate_on.x, evaluate_on.y, example, scorer=scorer, reference=original_outputs).as_dict()
        drop = gated.drop(rows[-1].metrics, metrics) if gated else 0.0
        total = gated.drop(before, metrics) if gated else 0.0
        collapse = None
        if chance is not None:
            collapse = diagnose.explain(spec.pass_name, report, before=rows[-1].metrics["accuracy"],
                                        after=metrics["accuracy"], chance=chance)
        if collapse:
            # Said as soon as it happens: a later stage (distillation) may still recover it.
            notes.append(collapse)
            collapses.append(f"stage {spec.index} ({spec.label}): {collapse}")
            progress(f"stage {spec.index} {spec.label}: {collapse}")
        rows.append(StageRow(spec.index, spec.label, spec.pass_name, metrics, seconds, status, drop, total, report,
                             tuple(notes)))
        if gated and spec.max_drop_pt is not None and drop > spec.max_drop_pt:
            raise StageBudgetError(
                f"stage {spec.index} ({spec.label}): {gated.describe(metrics)} after vs "
                f"{gated.describe(rows[-2].metrics)} before: drop {gated.amount(drop)} exceeds the stage budget of "
                f"{gated.budget(spec.max_drop_pt)}" + (f"; {collapse}" if collapse else ""),
                rows, evaluated_on)
        # The total budget judges the recipe's result: intermediate stages (pruning
        # before the distillation that recovers from it) may dip below it.
        if gated and spec is recipe.stages[-1] and total > recipe.max_total_drop_pt:
            raise StageBudgetError(
                f"after the last stage, {spec.index} ({spec.label}): {gated.describe(metrics)} vs the original's "
                f"{gated.describe(before)}: total drop {gated.amount(total)} exceeds the recipe budget of "
                f"{gated.budget(recipe.max_total_drop_pt)}; {_where_lost(rows, collapses, chance, gated)}",
                rows, evaluated_on)
    return Compressed(current, tuple(rows), evaluated_on)


def _where_lost(rows: list[StageRow], collapses: list[str], chance: float | None, gated: StageMetric) -> str:
    """Which stage lost the gated metric: the first that collapsed, with its likely cause,
    when the result is still collapsed against the original (a later distillation may have
    recovered most of it), else the one with the largest drop."""
    if collapses and chance is not None:
        first, last = rows[0].metrics["accuracy"], rows[-1].metrics["accuracy"]
        if diagnose.collapsed(before=first, after=last, chance=chance):
            return collapses[0]
    worst = max(rows[1:], key=lambda r: r.drop_pt)
    return f"the largest drop was stage {worst.stage} ({worst.name}): {gated.amount(worst.drop_pt)}"


def _store(folder: Path, model, fresh, meta: dict) -> str:
    """Write a cache entry atomically; "miss" when stored, "off" when the model's structure
    cannot be snapshotted (the stage still ran; it just is not reusable)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=folder.parent))
    try:
        snapshot.save(model, fresh, staging, meta)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(staging, folder)
        return "miss"
    except snapshot.NotSnapshottable:
        shutil.rmtree(staging, ignore_errors=True)
        return "off"
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

