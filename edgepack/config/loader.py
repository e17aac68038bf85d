"""Reading TOML files into the schemas, and finding built-in and project-local targets
and device profiles.

Errors name the file and the field path, and list every problem in the file at once.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from edgepack.config.schema import DeviceProfile, Project, Recipe, Target
from edgepack.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PROJECT_FILE = "edgepack.toml"


def builtin_dir(kind: str) -> Path:
    """`targets` or `profiles` shipped with edgepack: inside the wheel, or at the top of a
    checkout when running from source (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    inside_wheel = package / "_builtin" / kind
    if inside_wheel.is_dir():
        return inside_wheel
    return package.parent / kind


def _format_loc(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validation_problems(path: Path, err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _format_loc(tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-after"))))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        problems.append(f"{path}: {loc}: {msg}")
    return problems


def read_toml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8 text") from None


def parse(model: type[M], path: Path, data: dict) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(path, e)
        raise ConfigError("; ".join(problems), problems=problems) from None


def load_project(project_dir: Path) -> Project:
    path = project_dir / PROJECT_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no {PROJECT_FILE} here; point --project at a folder that has one (see samples/digits)")
    return parse(Project, path, read_toml(path))


class Catalog:
    """Targets or device profiles, by name: built-in ones, then any in extra folders
    (a project's own `targets/` or `profiles/`), later folders overriding earlier ones."""

    def __init__(self, kind: str, model: type[BaseModel], extra_dirs: list[Path] = ()):
        self.kind = kind
        self.model = model
        self.dirs = [builtin_dir(kind), *[d for d in extra_dirs if d.is_dir()]]

    def files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for d in self.dirs:
            for p in sorted(d.glob("*.toml")):
                found[p.stem] = p
        return dict(sorted(found.items()))

    def names(self) -> list[str]:
        return list(self.files())

    def path(self, name: str) -> Path:
        files = self.files()
        if name not in files:
            singular = {"profiles": "device profile"}.get(self.kind, self.kind.rstrip("s"))
            raise ConfigError(f"unknown {singular} {name!r}; valid: {', '.join(files) or '(none found)'}")
        return files[name]

    def load(self, name: str):
        path = self.path(name)
        data = read_toml(path)
        obj = parse(self.model, path, data)
        if obj.name != name:
            raise ConfigError(f"{path}: name: says {obj.name!r} but the file is named {name!r}.toml; make them match")
        return obj

    def load_all(self) -> tuple[list, list[str]]:
        """Every entry that parses, and the problems of those that do not."""
        ok, problems = [], []
        for name in self.files():
            try:
                ok.append(self.load(name))
            except ConfigError as e:
                problems.extend(e.problems or [str(e)])
        return ok, problems


def targets_catalog(project_dir: Path | None = None, extra: list[Path] = ()) -> Catalog:
    dirs = ([project_dir / "targets"] if project_dir else []) + list(extra)
    return Catalog("targets", Target, dirs)


def profiles_catalog(project_dir: Path | None = None, extra: list[Path] = ()) -> Catalog:
    dirs = ([project_dir / "profiles"] if project_dir else []) + list(extra)
    return Catalog("profiles", DeviceProfile, dirs)


def recipes_catalog(project_dir: Path | None = None, extra: list[Path] = ()) -> Catalog:
    dirs = ([project_dir / "recipes"] if project_dir else []) + list(extra)
    return Catalog("recipes", Recipe, dirs)
