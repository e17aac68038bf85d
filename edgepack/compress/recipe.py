"""Turning a project's `[compress]` section (or a preset named by --recipe) into typed
stages, validated against the pass registry before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgepack.compress.quantize_stage import DEFAULT as DEFAULT_QUANTIZE
from edgepack.compress.quantize_stage import QuantizeConfig
from edgepack.config.loader import recipes_catalog, validation_problems
from edgepack.config.schema import Project
from edgepack.errors import ConfigError

# Keys every stage may carry besides its pass's own parameters.
STAGE_KEYS = ("pass", "name", "max_drop_pt")


@dataclass(frozen=True)
class StageSpec:
    index: int
    pass_name: str
    label: str
    config: Any                   # the pass's Config instance
    max_drop_pt: float | None     # accuracy this stage may cost, in points, vs the stage before

    def as_dict(self) -> dict:
        return {"stage": self.index, "pass": self.pass_name, "name": self.label,
                "max_drop_pt": self.max_drop_pt, "config": self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class ResolvedRecipe:
    name: str                      # a preset's name, "inline", or "none"
    source: str                    # the file the stages came from
    stages: tuple[StageSpec, ...]  # model-changing stages, in order
    quantize: QuantizeConfig
    max_total_drop_pt: float

    def as_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "max_total_drop_pt": self.max_total_drop_pt,
                "stages": [s.as_dict() for s in self.stages],
                "quantize": self.quantize.model_dump(mode="json", exclude={"tuned_ranges"})}


def registry() -> dict[str, type]:
    from edgepack.passes import PASSES

    return {**PASSES, "quantize": _QuantizeStage}


class _QuantizeStage:
    name = "quantize"
    Config = QuantizeConfig


def parse_stages(raw: tuple[dict, ...], *, where: Path, prefix: str, default_budget: float | None = None) -> tuple[list[StageSpec], QuantizeConfig, list[str]]:
    passes = registry()
    problems: list[str] = []
    stages: list[StageSpec] = []
    quantize = DEFAULT_QUANTIZE
    for i, entry in enumerate(raw):
        path = f"{prefix}[{i}]"
        name = entry.get("pass")
        if name not in passes:
            problems.append(f"{where}: {path}.pass: {'missing' if name is None else f'unknown pass {name!r}'}; valid: {', '.join(sorted(passes))}")
            continue
        params = {k: v for k, v in entry.items() if k not in STAGE_KEYS}
        budget = entry.get("max_drop_pt", default_budget)
        if budget is not None and (not isinstance(budget, (int, float)) or budget < 0):
            problems.append(f"{where}: {path}.max_drop_pt: must be a number >= 0, got {budget!r}")
            continue
        try:
            config = passes[name].Config.model_validate(params)
        except ValidationError as e:
            problems.extend(p.replace(f"{where}: ", f"{where}: {path}.", 1) for p in validation_problems(where, e))
            continue
        if name == "quantize":
            if i != len(raw) - 1:
                problems.append(f"{where}: {path}: the quantize stage must come last (quantization happens when each format is exported)")
            quantize = config
            continue
        stages.append(StageSpec(index=len(stages) + 1, pass_name=name, label=entry.get("name") or name,
                                config=config, max_drop_pt=budget))
    return stages, quantize, problems


def resolve_recipe(project_dir: Path, project: Project, *, recipe: str | None = None) -> ResolvedRecipe:
    """The recipe a build runs: --recipe NAME, else the project's compress.recipe, else its
    inline compress.stages, else none (quantize with defaults)."""
    settings = project.compress
    name = recipe or settings.recipe
    if name:
        catalog = recipes_catalog(project_dir)
        preset = catalog.load(name)
        where = catalog.path(name)
        stages, quantize, problems = parse_stages(preset.stages, where=where, prefix="stages")
        total = preset.max_total_drop_pt
        source = str(where)
    else:
        where = project_dir / "edgepack.toml"
        stages, quantize, problems = parse_stages(settings.stages, where=where, prefix="compress.stages")
        total = settings.max_total_drop_pt
        name = "inline" if settings.stages else "none"
        source = str(where)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else f"{len(problems)} problems in the compression recipe", problems=problems)
    return ResolvedRecipe(name=name, source=source, stages=tuple(stages), quantize=quantize, max_total_drop_pt=total)
