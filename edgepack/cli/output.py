"""How the CLI talks: one-line errors (a traceback only with -v), exit codes, JSON."""

from __future__ import annotations

import json
import sys
import traceback

import click
import typer
from rich.console import Console

from edgepack.errors import EdgepackError

def _console(**kw) -> Console:
    console = Console(**kw)
    if not console.is_terminal:  # logs and pipes: do not squeeze tables into 80 columns
        console = Console(width=140, **kw)
    return console


stdout = _console()
stderr = _console(stderr=True)

VERBOSE = {"on": False}


def print_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def fail(err: EdgepackError) -> int:
    problems = getattr(err, "problems", None) or []
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
    VERBOSE["on"] = any(a in ("-v", "--verbose") for a in sys.argv[1:])
    try:
        result = app(standalone_mode=False)
        return result if isinstance(result, int) else 0
    except EdgepackError as e:
        return fail(e)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        stderr.print("aborted")
        return 130
    except click.ClickException as e:  # usage errors: bad flags, unknown commands
        e.show()
        return 2
    except KeyboardInterrupt:
        stderr.print("interrupted; nothing was written")
        return 130
    except Exception as e:
        stderr.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (this is a bug; rerun with -v for the traceback)", highlight=False)
        if VERBOSE["on"]:
            traceback.print_exc()
        return 4
