"""`edgepack devices` (list device profiles) and `edgepack devices setup` (prepare the
emulated aarch64 environment ahead of time)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgepack.cli.output import print_json, stderr, stdout

app = typer.Typer(help="List device profiles, or prepare the emulated aarch64 environment.", invoke_without_command=True)


@app.callback()
def devices(
    ctx: typer.Context,
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder; its profiles/ folder adds or overrides built-in profiles."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List device profiles: cores, clocks, ISA features, memory, the QEMU CPU standing in for each."""
    if ctx.invoked_subcommand is not None:
        return
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


@app.command("setup")
def setup(
    force: bool = typer.Option(False, "--force", help="Rebuild the environment even if a prepared one exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the prepared environment as JSON."),
) -> None:
    """Prepare the emulated aarch64 environment (qemu sysroot, aarch64 runtimes, native
    ExecuTorch runner, instruction counter): about 30 s and 270 MB, cached per version."""
    from edgepack.devices import sysroot

    missing = sysroot.missing_host_tools()
    if missing:
        from edgepack.errors import ToolchainError

        raise ToolchainError(f"devices setup: missing host tools: {', '.join(missing)}; install them with apt-get "
                             "(qemu-user g++-aarch64-linux-gnu gcc-aarch64-linux-gnu gcc xz-utils)")
    env = sysroot.setup(force=force, progress=not json_out)
    info = {"root": str(env.root), **{k: env.manifest.get(k) for k in ("setup_seconds", "size_bytes", "cpu_models")}}
    if json_out:
        print_json({"schema": "edgepack.devices-setup/1", **info})
    else:
        stdout.print(f"emulated aarch64 environment ready at {env.root} "
                     f"({(info['size_bytes'] or 0) / 1e6:.0f} MB; qemu CPU models: {', '.join(info['cpu_models'] or [])})")
