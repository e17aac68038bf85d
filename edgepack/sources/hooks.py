"""Calling the functions a project names as `file.py:function` (model factories and data
hooks). These are the project's own source files, imported like any Python module;
model weights and programs are never executed (see `sources.pytorch`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from edgepack.errors import ConfigError
from edgepack.interrupts import Interrupted, check_interrupted, handlers_installed, received

# Keyed by path, not module name: two projects may hold byte-identical files whose
# sibling imports resolve differently.
_LOADED: dict[Path, Any] = {}

# Folders holding project code that was imported: a traceback frame in one of them is the
# project's code, wherever it was called from (a forward inside a converter, say).
_PROJECT_FOLDERS: set[Path] = set()


def is_real_interrupt(exc: BaseException) -> bool:
    """Whether `exc` stands for a signal rather than code that raised it. Under the CLI's
    handlers a signal arrives as Interrupted and is recorded, so a KeyboardInterrupt with
    no signal recorded was raised by code; without them (a notebook), Ctrl-C arrives as
    KeyboardInterrupt and is taken as one."""
    if isinstance(exc, Interrupted):
        return True
    if isinstance(exc, KeyboardInterrupt):
        return not handlers_installed() or received() is not None
    return False


def describe_exception(exc: BaseException) -> str:
    """`Type: message` (first line), or `sys.exit(status)`: a bare status reads as a number."""
    if isinstance(exc, SystemExit):
        return f"sys.exit({exc.code!r})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def project_frame(exc: BaseException) -> str | None:
    """`file.py:line in function` of the innermost project frame in exc's traceback."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        path = Path(code.co_filename)
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        # A virtual environment inside the project folder is not the project's code.
        if (not name.startswith("edgepack.") and "site-packages" not in path.parts and "dist-packages" not in path.parts
                and any(path.is_relative_to(folder) for folder in _PROJECT_FOLDERS)):
            found = f"{path.name}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return found


def user_code_error(exc: BaseException, *, what: str) -> ConfigError:
    """The one-line error for project code that raised or exited (never a success)."""
    where = project_frame(exc)
    verb = "called" if isinstance(exc, SystemExit) else "raised"
    return ConfigError(f"{what}{f' ({where})' if where else ''} {verb} {describe_exception(exc)}")


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
        _PROJECT_FOLDERS.add(path.parent)
        try:
            spec_obj.loader.exec_module(module)
        except BaseException as e:  # the user's module failed to import, or exited
            if is_real_interrupt(e):
                raise
            raise ConfigError(f"{what} {spec!r}: importing {path.name} failed: {describe_exception(e)}") from e
        finally:
            sys.path.remove(str(path.parent))
        _LOADED[path] = module
    func = getattr(module, func_name, None)
    if not callable(func):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(f"{what} {spec!r}: {path.name} has no function {func_name!r}; callables there: {', '.join(available) or '(none)'}")
    return func


def call_hook(project_dir: Path, spec: str, *args: Any, what: str) -> Any:
    """`spec`'s function called with `args` (data hooks take none; a metric hook takes the
    outputs and labels); anything it raises or exits with is one ConfigError line."""
    func = resolve_hook(project_dir, spec, what=what)
    folder = str((project_dir / spec.rsplit(":", 1)[0]).resolve().parent)
    sys.path.insert(0, folder)
    try:
        result = func(*args)
    except ConfigError:
        raise
    except BaseException as e:  # SystemExit, GeneratorExit, its own BaseException: a failure too
        if is_real_interrupt(e):
            raise
        raise user_code_error(e, what=f"{what} {spec!r}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    # The hook may have caught the interrupt and returned as if nothing happened.
    check_interrupted()
    return result
