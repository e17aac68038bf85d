"""`edgepack targets` and `edgepack targets show NAME`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgepack.cli.output import print_json, stderr, stdout

app = typer.Typer(help="List deployment targets, or show one resolved.", invoke_without_command=True, no_args_is_help=False)

_PROJECT = typer.Option(Path("."), "--project", "-p", help="Project folder; its targets/ folder adds or overrides built-in targets.")


@app.callback()
def list_targets(
    ctx: typer.Context,
    project: Path = _PROJECT,
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the targets edgepack can build for (built-in and project-local)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgepack.config.loader import targets_catalog

    catalog = targets_catalog(project.resolve())
    targets, problems = catalog.load_all()
    files = catalog.files()
    if json_out:
        print_json({"schema": "edgepack.targets/1", "problems": problems, "targets": [
            {"name": t.name, "device": t.device, "description": t.description, "file": str(files[t.name]),
             "artifacts": [a.model_dump() for a in t.artifacts]} for t in targets]})
        return
    from edgepack.config.loader import builtin_dir

    table = Table(title="targets (edgepack targets show NAME for details)")
    for col in ("name", "device", "artifacts", "from"):
        table.add_column(col)
    for t in targets:
        arts = ", ".join(f"{a.format}/{a.precision}" for a in t.artifacts)
        origin = "built-in" if files[t.name].parent == builtin_dir("targets") else str(files[t.name])
        table.add_row(t.name, t.device, arts, origin)
    stdout.print(table)
    for p in problems:
        stderr.print(f"[yellow]skipped:[/] {p}", highlight=False)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Target name, e.g. android."),
    project: Path = _PROJECT,
) -> None:
    """Print one target, fully resolved (defaults filled in) with its device profile, as TOML-like JSON."""
    from edgepack.config.loader import profiles_catalog, targets_catalog

    catalog = targets_catalog(project.resolve())
    target = catalog.load(name)
    device = profiles_catalog(project.resolve()).load(target.device)
    print_json({"schema": "edgepack.target/1", "file": str(catalog.path(name)),
                "target": target.model_dump(), "device_profile": device.model_dump()})
