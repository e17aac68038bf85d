"""The matrix file: which projects, targets and recipes to build, and how.

    [matrix]
    output_dir = "dist-matrix"       # relative to the matrix file; one folder per project and recipe
    runner = "host"                  # or "qemu", as `edgepack build --runner`
    latency_gate = true              # false: waive max_latency_ms, as --no-latency-gate
    retries = 1                      # a failed or lost step is run again at most this many times

    [[entries]]
    project = "samples/digits"       # relative to the matrix file
    targets = ["android", "raspberry-pi"]   # default: the project's [build] targets; ["*"]: every target it can see
    recipes = ["project", "int8"]    # "project": the project's own [compress]; default ["project"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edgepack.config.loader import parse, read_toml
from edgepack.config.schema import Strict
from edgepack.names import check_name

PROJECT_RECIPE = "project"


class MatrixSettings(Strict):
    output_dir: str = "dist-matrix"
    runner: Literal["host", "qemu"] = "host"
    latency_gate: bool = True
    retries: int = Field(default=1, ge=0, le=5)


class Entry(Strict):
    project: str
    targets: tuple[str, ...] | None = None
    recipes: tuple[str, ...] = (PROJECT_RECIPE,)

    @field_validator("targets", "recipes")
    @classmethod
    def _names(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one name, or leave the key out")
        for name in v:
            if name != "*":
                check_name(name)
        return v


class MatrixFile(Strict):
    matrix: MatrixSettings = MatrixSettings()
    entries: tuple[Entry, ...] = Field(min_length=1)


def load_matrix(path: Path) -> MatrixFile:
    return parse(MatrixFile, path, read_toml(path))
