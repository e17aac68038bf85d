"""`edgepack profile`: run artifacts on a device (host, emulated, ssh, adb) and report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from edgepack.cli.output import print_json, stderr, stdout


def profile(
    path: Path = typer.Argument(..., help="A dist/<target> folder from `edgepack build`, or one .tflite/.pte/.onnx file."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile (default: the build's); see `edgepack devices`."),
    runner: str = typer.Option("host", "--runner", help="host, qemu (emulated aarch64), ssh (a board) or adb (a phone)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="Inputs as .npy (default: the dist's testdata/inputs.npy)."),
    iterations: int = typer.Option(50, "--iterations", min=1, help="Timed runs after warm-up."),
    warmup: int = typer.Option(10, "--warmup", min=0),
    threads: int = typer.Option(1, "--threads", min=1),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder (for project-local device profiles)."),
    ssh_host: Optional[str] = typer.Option(None, "--ssh-host", help="user@host of the board (default: the profile's [reach] ssh_host)."),
    ssh_port: Optional[int] = typer.Option(None, "--ssh-port"),
    identity_file: Optional[Path] = typer.Option(None, "--identity-file", help="ssh private key."),
    ssh_python: Optional[str] = typer.Option(None, "--ssh-python", help="Python on the board (default: python3)."),
    exec_prefix: str = typer.Option("", "--exec-prefix", help="Command put before every program run on the board, e.g. 'taskset -c 4-7'."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", min=1, help="Seconds to wait for ssh/adb to connect."),
    adb_serial: Optional[str] = typer.Option(None, "--adb-serial", help="Phone serial (default: the profile's [reach] adb_serial)."),
    ops: bool = typer.Option(False, "--ops", help="Also time each operator where the runtime exposes it (ONNX Runtime)."),
    no_record: bool = typer.Option(False, "--no-record", help="Do not add the figures to the dist's manifest.json."),
    calibration: Optional[Path] = typer.Option(None, "--latency-calibration", "--calibration", help="Latency calibration file: ssh/adb add their p50s to it per format, precision and --threads (created if missing); qemu estimates of a matching key are scaled by it."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> None:
    """Run each artifact on a device: parity, load time, latency percentiles, memory; under qemu, instructions per inference."""
    from edgepack import profile as prof

    reach = prof.Reach(ssh_host=ssh_host, ssh_port=ssh_port, identity_file=identity_file, ssh_python=ssh_python,
                       exec_prefix=exec_prefix, connect_timeout_s=connect_timeout, adb_serial=adb_serial)
    if calibration is not None and runner in ("host", "qemu") and not calibration.is_file():
        from edgepack.errors import ConfigError

        raise ConfigError(f"--latency-calibration {calibration}: not found; a profile with --runner ssh or adb writes it")
    kwargs = dict(device=device, runner=runner, inputs=inputs, iterations=iterations, warmup=warmup, threads=threads,
                  project_dir=project, write_manifest=not no_record, reach=reach, op_profile=ops,
                  calibration=calibration.resolve() if calibration else None)
    if json_out:
        result = prof.profile(path, **kwargs)
        print_json(result.as_dict())
        raise typer.Exit(result.exit_code)
    from edgepack.cli.progress import progress

    with progress("profiling") as say:
        result = prof.profile(path, progress=say, **kwargs)
    stdout.print(profile_table(result))
    for a in result.artifacts:
        row = a.measurement.to_json()
        rows = row.get("ops")
        if isinstance(rows, list) and rows:
            table = Table(title=f"{a.file}: time per operator type ({row.get('runtime')}'s profiler)", title_justify="left")
            for col in ("op", "nodes", "ms / inference", "share"):
                table.add_column(col, justify="left" if col == "op" else "right")
            for r in rows:
                table.add_row(r["op"], str(r["nodes"]), f"{r['ms_per_inference']:.4f}", f"{r['share'] * 100:.1f}%")
            stdout.print(table)
        elif isinstance(rows, str):
            stdout.print(f"{a.file}: per-operator times {rows}", highlight=False)
    methods = set()
    for a in result.artifacts:
        for e in a.estimates:
            stdout.print(f"{a.file} on {e.device}: {e.label}", highlight=False)
            methods.add(e.estimate.method)
    for m in sorted(methods):
        stdout.print(f"[dim]estimate method: {m}[/]", highlight=False)
    for a in result.artifacts:
        for w in a.warnings:
            stderr.print(f"[yellow]warning:[/] {a.file}: {w}", highlight=False)
    if runner in ("ssh", "adb"):
        written = sorted({a.measurement.calibrated for a in result.artifacts if a.measurement.calibrated})
        if written:
            stdout.print(f"latency calibration recorded in {calibration} per format and precision, at {threads} "
                         f"thread(s); build with --latency-calibration {calibration} "
                         f"(or [build] latency_calibration) and [build] threads = {threads} to use it", highlight=False)
        elif calibration is None:
            stdout.print("[dim]not recorded as a latency calibration: pass --latency-calibration FILE to keep the "
                         "measured/estimated ratio for later builds[/]", highlight=False)
        else:
            stdout.print(f"nothing recorded in {calibration}: the manifest holds no estimate for {result.device} to "
                         f"compare with; build with --runner qemu (or profile --runner qemu) first", highlight=False)
    for f in result.failures:
        stderr.print(f"error: {f}", highlight=False, markup=False)
    raise typer.Exit(result.exit_code)


def profile_table(result) -> Table:
    emulated = result.runner == "qemu"
    title = f"{result.source} on {result.device} (runner: {result.runner})"
    if emulated:
        title += ": emulated, so no latency; instructions per inference are exact and repeatable"
    table = Table(title=title, title_justify="left")
    timing = ("emulated wall p50",) if emulated else ("p50", "p90", "p99", "std")
    counts = ("instructions / inference", "SDOT / inference") if emulated else ()
    for col in ("file", "precision", "agreement", "max abs err", "vs build host", "load", "first", *timing, "peak mem", *counts):
        table.add_column(col, justify="left" if col in ("file", "precision") else "right")
    for a in result.artifacts:
        m = a.measurement.to_json()
        parity = m.get("parity") or {}
        ins = m.get("instructions") or {}
        times = ([f"{m['emulated_wall_p50_ms']:.2f} ms"] if emulated
                 else [f"{m[k]:.3f} ms" if m.get(k) is not None else "-" for k in ("p50", "p90", "p99", "std")])
        table.add_row(
            a.file, a.precision,
            f"{parity['agreement'] * 100:.1f}%" if "agreement" in parity else "-",
            f"{parity['max_abs_error']:.3g}" if "max_abs_error" in parity else "-",
            f"{parity['max_abs_diff_vs_build_host']:.3g}" if "max_abs_diff_vs_build_host" in parity else "-",
            f"{m.get('load_ms') or 0:.1f} ms", f"{m.get('first_inference_ms') or 0:.2f} ms", *times,
            f"{m.get('peak_rss_mb') or 0:.0f} MB" + (" (qemu)" if emulated else ""),
            *([f"{ins.get('per_inference', 0):,.0f}", f"{ins.get('dotprod_per_inference', 0):,.0f}"] if emulated else []),
        )
    return table
