"""How the CLI talks: one-line errors (a traceback only with -v), exit codes, JSON."""

from __future__ import annotations

import json
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


def print_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def fail(err: EdgepackError) -> int:
    problems = getattr(err, "problems", None) or []
    if "--json" in sys.argv[1:]:  # machines get the error as a document too
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "edgepack")
        print_json({"schema": f"edgepack.{command}/1", "ok": False, "exit_code": err.exit_code,
                    "error": str(err), "problems": problems})
    stderr.print("[bold red]error:[/] ", end="", highlight=False)
    # soft_wrap: the message stays one line however long, for logs and grep.
    stderr.print(str(err) + (":" if len(problems) > 1 else ""), markup=False, highlight=False, soft_wrap=True)
    if len(problems) > 1:
        for p in problems:
            stderr.print(f"  - {p}", highlight=False, markup=False)
    if VERBOSE["on"]:
        traceback.print_exception(err)
    return err.exit_code


def run_guarded(app: typer.Typer) -> int:
    """Run the app; usage errors and --help are handled by the CLI framework (exit 2 and
    0), edgepack errors become one line and their exit code, anything else is a bug."""
    VERBOSE["on"] = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    try:
        app(standalone_mode=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except EdgepackError as e:
        return fail(e)
    except KeyboardInterrupt:
        stderr.print("interrupted; the previous output was left as it was")
        return 130
    except Exception as e:
        stderr.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (this is a bug; rerun with -v for the traceback)", highlight=False)
        if VERBOSE["on"]:
            traceback.print_exc()
        return 4
