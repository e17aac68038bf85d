"""`edgepack matrix`: many projects x targets x recipes as one graph of steps, run
serially, on a local process pool or on a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgepack.cli.output import print_json, stderr, stdout


def matrix(
    matrix_file: Path = typer.Argument(..., help="The matrix TOML: a matrix table of settings and entries of project, targets and recipes."),
    executor: str = typer.Option("local", "--executor", "-e", help="serial, local (a process pool) or ray."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Local pool size (default: the cores, fewer when memory would not hold that many converters)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (auto, ray://host:10001); default: start a local Ray instance."),
    target_dir: Optional[list[Path]] = typer.Option(None, "--target-dir", help="Extra folder of target TOML files (repeatable)."),
    profile_dir: Optional[list[Path]] = typer.Option(None, "--profile-dir", help="Extra folder of device profile TOML files (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print the matrix result as one JSON document."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the planned steps and do nothing else."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Tracebacks on errors."),
) -> int:
    """Build every (project, target, recipe) of a matrix file; each step runs once, wherever it runs."""
    import time

    from edgepack.errors import ConfigError
    from edgepack.matrix.graph import plan_matrix
    from edgepack.matrix.spec import load_matrix

    if executor not in ("serial", "local", "ray"):
        raise ConfigError(f"--executor {executor!r}: valid: serial, local, ray")
    if address and executor != "ray":
        raise ConfigError("--address is for --executor ray")
    if workers is not None and (workers < 1 or executor == "ray"):
        raise ConfigError("--workers takes a positive count, for --executor local")
    plan = plan_matrix(matrix_file, load_matrix(matrix_file), target_dirs=target_dir or [], profile_dirs=profile_dir or [])
    if dry_run:
        if json_out:
            print_json(plan.as_dict())
        else:
            for step in plan.order():
                stdout.print(f"{step.kind:8} {step.label}", highlight=False, markup=False)
            stdout.print(f"{len(plan.steps)} steps, {len(plan.builds)} builds -> {plan.output_dir}", highlight=False)
        return 0
    from edgepack.matrix.executors import LocalExecutor, RayExecutor, default_workers, run_graph
    from edgepack.matrix.results import result_doc, write_results

    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'edgepack[ray]'") from None
        import os

        run_on = RayExecutor(address, env={k: v for k, v in os.environ.items() if k.startswith("EDGEPACK_")})
    else:
        run_on = LocalExecutor(1 if executor == "serial" else workers or default_workers())
    say = (lambda msg: stderr.print(msg, highlight=False, markup=False))
    started = time.perf_counter()
    try:
        states, interrupted = run_graph(plan, run_on, say)
    finally:
        run_on.close()
    doc = result_doc(plan, states, executor=executor, seconds=time.perf_counter() - started, interrupted=interrupted)
    result, index = write_results(doc, plan.output_dir)
    if json_out:
        print_json(doc)
    else:
        for b in doc["builds"]:
            for t in b["targets"]:
                verdict = "passed" if t["passed"] and t["complete"] else "FAILED: " + ("; ".join(t["failures"]) or "incomplete")
                stdout.print(f"{b['project']}/{b['recipe']} {t['target']}: {verdict} ({t['dist']})", highlight=False, markup=False)
        for f in doc["failures"]:
            stderr.print(f"error: {f['step']}: {'; '.join(f['errors'])}", highlight=False, markup=False)
        stdout.print(f"{doc['seconds']:.1f} s on {executor}; results: {result}; index: {index}", highlight=False)
    if interrupted:   # the results say what finished; exit as any interrupted command does
        import signal

        from edgepack.interrupts import Interrupted, received

        raise Interrupted(received() or signal.SIGINT)
    raise typer.Exit(0 if doc["ok"] else 1)
