"""How the CLI talks: one-line errors (a traceback only with -v), exit codes, JSON."""

from __future__ import annotations

import json
import os
import sys
import traceback

import typer
from rich.console import Console

from edgepack.errors import EdgepackError

def _console(**kw) -> Console:
    console = Console(**kw)
    if not console.is_terminal:  # logs and pipes: do not squeeze tables into 80 columns
        console = Console(width=140, **kw)
    return console


# soft_wrap: a message is one line however long; a terminal may fold it, we never do.
stdout = _console(soft_wrap=True)
stderr = _console(stderr=True, soft_wrap=True)

VERBOSE = {"on": False}


# With --json, stdout carries exactly one JSON document. The converters print on the
# process's stdout (litert-torch's fp16 recipe, TensorFlow's C++ logging, a project's own
# factory), some of it from C code that no Python redirect sees, so the file descriptor
# itself is moved: fd 1 points at stderr while a command runs, and the document is written
# to the original stdout, kept here.
_JSON_STDOUT: dict = {"file": None}


def reserve_stdout_for_json() -> None:
    if _JSON_STDOUT["file"] is not None:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    _JSON_STDOUT["file"] = os.fdopen(saved, "w", encoding="utf-8")


def print_json(doc: dict) -> None:
    out = _JSON_STDOUT["file"] or sys.stdout
    out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    out.flush()


def fail(err: EdgepackError) -> int:
    return _report(str(err), err.exit_code, getattr(err, "problems", None) or [], err)


def _report(message: str, exit_code: int, problems: list[str], err: BaseException) -> int:
    if "--json" in sys.argv[1:]:  # machines get the error as a document too
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "edgepack")
        print_json({"schema": f"edgepack.{command}/1", "ok": False, "exit_code": exit_code,
                    "error": message, "problems": problems})
    stderr.print("[bold red]error:[/] ", end="", highlight=False)
    # soft_wrap: the message stays one line however long, for logs and grep.
    stderr.print(message + (":" if len(problems) > 1 else ""), markup=False, highlight=False, soft_wrap=True)
    if len(problems) > 1:
        for p in problems:
            stderr.print(f"  - {p}", highlight=False, markup=False)
    if VERBOSE["on"]:
        traceback.print_exception(err)
    return exit_code


def _interrupted(err: BaseException, signum: int) -> int:
    import signal

    name = signal.Signals(signum).name
    return _report(f"interrupted by {name}; stopped, removed its temporary files, and left existing output as it was",
                   128 + signum, [], err)


def _raised_by_cli_framework(exc: BaseException) -> bool:
    """The CLI framework ends every run with sys.exit (the command's code, a usage error,
    --help); any other SystemExit came from code running inside a command."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    return module.split(".")[0] in ("typer", "click")


def _code_failure(exc: BaseException) -> int:
    """Something other than an EdgepackError escaped a command: the project's own code
    failing or exiting (exit 2, never a success), else a bug (exit 4)."""
    from edgepack.sources.hooks import describe_exception, project_frame, user_code_error

    if project_frame(exc) is not None:
        return fail(user_code_error(exc, what="the project's code"))
    if isinstance(exc, SystemExit):
        message = f"code inside the command called {describe_exception(exc)} before it finished (this is a bug; rerun with -v for the traceback)"
    else:
        message = f"{describe_exception(exc)} (this is a bug; rerun with -v for the traceback)"
    stderr.print("[bold red]internal error:[/] ", end="", highlight=False)
    stderr.print(message, markup=False, highlight=False, soft_wrap=True)
    if VERBOSE["on"]:
        traceback.print_exception(exc)
    return 4


def run_guarded(app: typer.Typer) -> int:
    """Run the app; usage errors and --help are handled by the CLI framework (exit 2 and
    0), edgepack errors become one line and their exit code, the project's code failing
    or exiting is exit 2, SIGINT and SIGTERM are 130 and 143, anything else is a bug."""
    from edgepack.interrupts import Interrupted, installed_handlers, received

    VERBOSE["on"] = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    if "--json" in sys.argv[1:]:
        reserve_stdout_for_json()
    with installed_handlers():
        try:
            try:
                app(standalone_mode=True)
                code = 0
            except SystemExit as e:
                if not _raised_by_cli_framework(e):
                    raise
                cause = e.__context__.__cause__ if e.__context__ is not None else None
                if isinstance(cause, KeyboardInterrupt):
                    # The framework turns KeyboardInterrupt into a quiet exit 130. Signals
                    # arrive as Interrupted, so this one was raised by code.
                    raise cause from None
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Interrupted as e:
            return _interrupted(e, e.signum)
        except BaseException as e:
            if received() is not None:  # whatever failed, it failed because of the signal
                return _interrupted(e, received())
            if isinstance(e, EdgepackError):
                return fail(e)
            return _code_failure(e)
        if received() is not None:  # a toolchain swallowed the interrupt: still not a success
            return _interrupted(Interrupted(received()), received())
        return code
