"""Calling the functions a project names as `file.py:function` (model factories and data
hooks). These are the project's own source files, imported like any Python module;
model weights and programs are never executed (see `sources.pytorch`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from edgepack.errors import ConfigError

# Keyed by path, not module name: two projects may hold byte-identical files whose
# sibling imports resolve differently.
_LOADED: dict[Path, Any] = {}


def resolve_hook(project_dir: Path, spec: str, *, what: str) -> Callable[..., Any]:
    file_part, func_name = spec.rsplit(":", 1)
    path = (project_dir / file_part).resolve()
    if not path.is_file():
        raise ConfigError(f"{what} {spec!r}: file {path} not found")
    # The module name ends up in exported graphs (tensor and node names), so it must not
    # depend on the machine, the folder or the process: only on the file's own name.
    module_name = f"edgepack_project.{path.stem}"
    module = _LOADED.get(path)
    if module is None:
        spec_obj = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        # The project's files import their siblings (e.g. `from model import Net`).
        sys.path.insert(0, str(path.parent))
        try:
            spec_obj.loader.exec_module(module)
        except Exception as e:  # the user's module failed to import
            raise ConfigError(f"{what} {spec!r}: importing {path.name} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.remove(str(path.parent))
        _LOADED[path] = module
    func = getattr(module, func_name, None)
    if not callable(func):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(f"{what} {spec!r}: {path.name} has no function {func_name!r}; callables there: {', '.join(available) or '(none)'}")
    return func


def call_hook(project_dir: Path, spec: str, *, what: str) -> Any:
    func = resolve_hook(project_dir, spec, what=what)
    folder = str((project_dir / spec.rsplit(":", 1)[0]).resolve().parent)
    sys.path.insert(0, folder)
    try:
        return func()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{what} {spec!r} raised {type(e).__name__}: {e}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
