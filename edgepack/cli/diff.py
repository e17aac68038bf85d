"""`edgepack diff`: what changed between two releases; exit 1 on a regression."""

from __future__ import annotations

from pathlib import Path

import typer

from edgepack.cli.output import print_json, stdout


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str) and len(v) == 64:
        return v[:12] + "..."
    return str(v)


def print_diff(result) -> None:
    from rich.table import Table

    if not result.changes:
        stdout.print(f"no changes between {result.old} and {result.new}", highlight=False)
        return
    table = Table(title=f"{result.old_version} -> {result.new_version}", title_justify="left")
    for col in ("area", "item", "field", "old", "new", "note"):
        table.add_column(col)
    for c in result.changes:
        style = "bold red" if c.regression else ""
        table.add_row(c.area, c.item, c.field, _fmt(c.old), _fmt(c.new),
                      ("REGRESSION " if c.regression else "") + c.note, style=style)
    stdout.print(table)
    n = len(result.regressions)
    stdout.print(f"[bold red]{n} regression(s)[/]" if n else "[green]no regressions[/]")


def diff(
    old: Path = typer.Argument(..., help="The earlier release: archive, dist folder or manifest.json."),
    new: Path = typer.Argument(..., help="The later release: archive, dist folder or manifest.json."),
    max_accuracy_drop_pt: float = typer.Option(0.5, help="Accuracy points an artifact may lose."),
    max_size_increase_pct: float = typer.Option(5.0, help="Percent an artifact may grow."),
    max_latency_increase_pct: float = typer.Option(25.0, help="Percent host latency may grow (compared only on the same machine)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> int:
    """Compare two releases: sizes, accuracy, latency, toolchain, recipe. Exit 1 when a metric regressed beyond its threshold."""
    from edgepack import api

    result = api.diff(old, new, api.Thresholds(max_accuracy_drop_pt=max_accuracy_drop_pt,
                                               max_size_increase_pct=max_size_increase_pct,
                                               max_latency_increase_pct=max_latency_increase_pct))
    if json_out:
        print_json(result.as_dict())
    else:
        print_diff(result)
    raise typer.Exit(result.exit_code)
