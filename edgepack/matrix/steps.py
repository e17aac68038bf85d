"""One step of a matrix, run in the process that calls it.

Every executor runs each step in a fresh process (a child process locally, a Ray worker
that serves one task): converters keep state between models in one process, and a step
must give the same bytes wherever it runs. What steps hand each other goes through the
projects' content-addressed caches on a folder every worker sees, written atomically, so
a worker killed mid-step leaves no entry behind, only the work to redo.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def _plan(doc: dict):
    from edgepack.plan import make_plan

    out = doc.get("output_dir")
    return make_plan(Path(doc["project"]), targets=list(doc["targets"]), output_dir=Path(out) if out else None,
                     runner=doc["runner"], target_dirs=[Path(d) for d in doc["target_dirs"]],
                     profile_dirs=[Path(d) for d in doc["profile_dirs"]], recipe=doc["recipe"],
                     latency_gate=doc["latency_gate"])


def _announce(doc: dict) -> None:
    """Where the process running a step says its pid: what a test kills to lose a worker."""
    folder = os.environ.get("EDGEPACK_MATRIX_PIDS")
    if folder:
        Path(folder, f"{os.getpid()}.pid").write_text(doc.get("label", ""))


def run_step(kind: str, doc: dict) -> dict:
    """Run one step; returns what the result records of it (with the torch intra-op thread
    count it ran with: executors.step_environment). Raises what the build raises."""
    from edgepack.determinism import pin_float_kernels

    pin_float_kernels()   # before torch loads oneDNN, as every build does
    import torch

    threads = torch.get_num_threads()
    return {**_run_step(kind, doc), "intra_op_threads": threads}


def _run_step(kind: str, doc: dict) -> dict:
    from edgepack import api

    _announce(doc)
    started = time.perf_counter()
    plan = _plan(doc)
    lines: list[str] = []
    say = lines.append
    if kind == "prepare":
        timings = api.prepare(plan, say)[3]
        return {"seconds": time.perf_counter() - started, "timings": timings}
    if kind == "export":
        from edgepack.devices.host import HostRunner
        from edgepack.pipeline.workshop import Workshop

        loaded, uncapturable, compressed, _ = api.prepare(plan, say)
        wanted = doc["export"]
        (tp,) = [t for t in plan.targets if t.target.name == wanted["target"]]
        (spec,) = [a for a in tp.target.artifacts if (a.format, a.precision) == (wanted["format"], wanted["precision"])]
        with tempfile.TemporaryDirectory(prefix="edgepack-matrix-") as workspace:
            workshop = Workshop(plan, loaded, compressed, workspace=Path(workspace), host_runner=HostRunner(), say=say,
                                uncapturable=uncapturable)
            stopped = workshop.stopped_by_capture(spec)
            if stopped is not None:   # the build step records this artifact as failed, with the reason
                return {"seconds": time.perf_counter() - started, "skipped": str(stopped)}
            artifact = workshop.export_only(tp, spec)
        return {"seconds": time.perf_counter() - started, "sha256": artifact.sha256, "reused": artifact.reused}
    if kind == "build":
        result = api.build(plan, progress=say)
        targets = [{"target": t.target, "passed": t.passed, "complete": t.complete,
                    "dist": str(t.dist or t.rejected) if (t.dist or t.rejected) else None,
                    "failures": list(t.failures),
                    "artifacts": [{"file": a["file"], "format": a["format"], "precision": a["precision"],
                                   "sha256": a["sha256"], "size_bytes": a["size_bytes"]}
                                  for a in t.manifest.get("artifacts", [])],
                    "failed_artifacts": [f.manifest_entry() for f in t.failed_artifacts]}
                   for t in result.targets]
        return {"seconds": time.perf_counter() - started, "exit_code": result.exit_code, "targets": targets}
    raise ValueError(f"unknown step kind {kind!r}")
