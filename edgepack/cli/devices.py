"""`edgepack devices`: the device profiles edgepack knows."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgepack.cli.output import print_json, stderr, stdout


def devices(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder; its profiles/ folder adds or overrides built-in profiles."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List device profiles: cores, clocks, ISA features, memory, the QEMU CPU standing in for each."""
    from edgepack.config.loader import profiles_catalog

    catalog = profiles_catalog(project.resolve())
    profiles, problems = catalog.load_all()
    if json_out:
        print_json({"schema": "edgepack.devices/1", "problems": problems, "devices": [p.model_dump() for p in profiles]})
        return
    table = Table(title="device profiles")
    for col in ("name", "cores", "isa", "features", "memory", "qemu cpu", "real device"):
        table.add_column(col)
    for p in profiles:
        cores = " + ".join(f"{c.count}x {c.core.removeprefix('cortex-')} {c.max_clock_ghz:g}GHz" for c in p.clusters)
        reach = p.reach.ssh_host or (f"adb {p.reach.adb_serial}" if p.reach.adb_serial else "-")
        table.add_row(p.name, cores, p.isa, " ".join(p.features),
                      f"{p.memory_gb:g} GB {p.memory_bandwidth_gbs:g} GB/s", p.qemu_cpu, reach)
    stdout.print(table)
    for p in problems:
        stderr.print(f"[yellow]skipped:[/] {p}", highlight=False)
