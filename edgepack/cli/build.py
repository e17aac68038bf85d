"""`edgepack build`: compress, export, verify and measure for one or more targets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.output import print_json, stderr, stdout


def build(
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Target to build (repeatable); default: the project's [build] targets."),
    all_targets: bool = typer.Option(False, "--all-targets", help="Build every target the project can see (built-in, the project's targets/, --target-dir)."),
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder holding edgepack.toml."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: the project's build.output_dir, 'dist')."),
    runner: str = typer.Option("host", "--runner", help="Where artifacts also run: host only, or qemu (emulated aarch64 of the target's device: parity and instruction counts)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Compression preset (int8, prune-distill-int8, compact, or a project recipes/*.toml); overrides [compress]."),
    target_dir: Optional[list[Path]] = typer.Option(None, "--target-dir", help="Extra folder of target TOML files (repeatable)."),
    profile_dir: Optional[list[Path]] = typer.Option(None, "--profile-dir", help="Extra folder of device profile TOML files (repeatable)."),
    calibration: Optional[Path] = typer.Option(None, "--latency-calibration", "--calibration", help="Latency calibration file from `edgepack profile --runner ssh|adb --latency-calibration FILE`, applied to estimates of the same format, precision and threads (overrides [build] latency_calibration)."),
    no_latency_gate: bool = typer.Option(False, "--no-latency-gate", help="Waive the targets' max_latency_ms (a host build cannot judge it); the manifest records the waiver."),
    fresh: bool = typer.Option(False, "--fresh", help="Capture the model and export every artifact again instead of reusing those of earlier builds."),
    json_out: bool = typer.Option(False, "--json", help="Print the build result as one JSON document."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved plan and do nothing else."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> int:
    """Build the project's artifacts for a target: export, verify against the reference, measure, write dist/<target>/."""
    from edgepack import api

    if runner not in ("host", "qemu"):
        from edgepack.errors import ConfigError

        raise ConfigError(f"--runner {runner!r} is not a build runner; valid: host, qemu (ssh and adb: edgepack profile)")
    if all_targets:
        from edgepack.config.loader import targets_catalog
        from edgepack.errors import ConfigError

        if target:
            raise ConfigError("give --target or --all-targets, not both")
        target = targets_catalog(project.resolve(), [Path(d) for d in target_dir or []]).names()
    plan = api.make_plan(project, targets=target, output_dir=output, runner=runner,
                         target_dirs=target_dir or [], profile_dirs=profile_dir or [], recipe=recipe,
                         latency_calibration=calibration, reuse_exports=not fresh,
                         latency_gate=not no_latency_gate)
    if dry_run:
        if json_out:
            print_json(plan.as_dict())
        else:
            from edgepack.cli.tables import plan_table

            stdout.print(plan_table(plan))
        return 0
    from edgepack.compress.engine import StageBudgetError
    from edgepack.pipeline.latency_gate import unjudgeable

    for line in unjudgeable(plan):
        stderr.print(f"[yellow]warning:[/] {line}", highlight=False)

    try:
        if json_out:
            result = api.build(plan)
            print_json(result.as_dict())
        else:
            from edgepack.cli.tables import build_tables

            from edgepack.cli.progress import progress

            with progress("building") as say:
                result = api.build(plan, progress=say)
            for renderable in build_tables(result):
                stdout.print(renderable)
            for t in result.targets:   # the errors also go where errors go, one line each
                for f in t.failed_artifacts:
                    stderr.print(f"error: {t.target}: {f.file} not built: {f.error}", highlight=False, markup=False)
    except StageBudgetError as e:
        # The stages up to the failing one explain the numbers; nothing was exported.
        if json_out:
            print_json({"schema": "edgepack.build/1", "project": plan.project.project.name, "ok": False, "exit_code": 1,
                        "failure": str(e), "stages": [r.as_dict() for r in e.rows], "stages_evaluated_on": e.evaluated_on,
                        "targets": []})
        else:
            from edgepack.cli.tables import stage_table

            stdout.print(stage_table([r.as_dict() for r in e.rows], e.evaluated_on))
        raise
    raise typer.Exit(result.exit_code)
