"""Step `verify`: an artifact in its own runtime on the evaluation split, compared with
the fp32 model it was exported from (parity, per output) and with the original model's
scores for the project's task (the budgets); dynamic dims are run at two sizes each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.errors import ToolchainError
from edgepack.pipeline.records import Verified
from edgepack.release.manifest import TEST_VECTOR_SAMPLES


def verify(runner, artifact, *, fmt: str, precision: str, loaded, compressed, dims: tuple, model, input_shape,
           settings, say, delegate: str | None = None) -> Verified:
    from edgepack.verify.metrics import compare

    evaluation = loaded.evaluation
    say(f"verifying {fmt} {precision} on {len(evaluation)} samples")
    run = runner.run(artifact.path, fmt, evaluation.x, warmup=settings.warmup, iterations=settings.iterations,
                     threads=settings.threads, delegate=delegate)
    # Parity with the model the artifact was exported from; the task's scores against
    # the original model's (they include what compression cost).
    parity = compare(compressed.reference, run.outputs, evaluation.y, scorer=loaded.scorer).against(loaded.original_metrics)
    checks: tuple = ()
    if dims:
        say(f"checking {fmt} {precision} at two sizes of each dynamic dim")
        checks = tuple(check_dynamic(runner, artifact.path, fmt, dims, model, evaluation.x, input_shape, delegate))
    return Verified(parity=parity, latency_ms=run.latency_dict(), recorded=run.outputs[:TEST_VECTOR_SAMPLES],
                    dynamic_checks=checks,
                    delegate=None if delegate is None else delegate_record(fmt, delegate, artifact.details, run.delegate))


def delegate_record(fmt: str, requested: str, export_details: dict, reported: dict | None) -> dict:
    """The manifest's `delegate` of an artifact: what the target asked for, what the
    verification actually ran on, and how that is known. A delegate that lives in the
    file is read from the exporter's report (delegated subgraphs); one the runtime
    applies, from what the runtime reported when loading the file."""
    from edgepack.formats import get_format

    if reported:
        return {"requested": requested, "used": reported["used"], "detail": reported["detail"]}
    if get_format(fmt).delegate_in_file and "delegated_subgraphs" in export_details:
        subgraphs = export_details["delegated_subgraphs"]
        if subgraphs:
            return {"requested": requested, "used": requested,
                    "detail": f"{export_details.get('backend', requested)} in the file: {subgraphs} delegated subgraph(s), "
                              f"{export_details.get('delegated_nodes', '?')} node(s)"}
        return {"requested": requested, "used": "none", "detail": "no delegate in the file: the runtime's own CPU kernels"}
    return {"requested": requested, "used": requested, "detail": "as requested; the runtime does not report what it ran on"}


def delegate_warnings(record: dict | None) -> list[str]:
    """A verification that did not run on the delegate the target asked for says so."""
    if not record or record["used"] == record["requested"]:
        return []
    return [f"the target asks for delegate {record['requested']!r}; verified on {record['used']!r}: {record['detail']}"]


def check_dynamic(runner, artifact: Path, fmt: str, dims, model, eval_x: np.ndarray, input_shape,
                  delegate: str | None = None) -> list[dict]:
    """Run the artifact at two sizes of every dynamic dim and compare with the torch model
    on the same inputs: the batch dim on real evaluation samples, other dims on fixed
    pseudo-random inputs of that size. A size the runtime refuses fails the build (exit 3)."""
    from edgepack.compress.evaluate import predict

    rng = np.random.default_rng(0)
    checks = []
    for d in dims:
        for size in sorted({d.min, min(d.max, max(d.min + 1, 7))}):
            shape = list(input_shape)
            shape[d.dim] = size
            if d.dim == 0 and size <= len(eval_x) and tuple(eval_x.shape[1:]) == tuple(shape[1:]):
                x = np.ascontiguousarray(eval_x[:size])
            else:
                x = rng.standard_normal(shape).astype(np.float32)
            try:
                run = runner.run(artifact, fmt, x, warmup=0, iterations=1, threads=1, batch=shape[0], delegate=delegate)
            except ToolchainError as e:
                raise ToolchainError(f"{fmt}: {artifact.name} was exported with dynamic {d.name} in [{d.min}, {d.max}] "
                                     f"but fails at {d.name}={size}: {e}", format=fmt, stage="verify") from e
            ref = predict(model, x, declared_batch=shape[0])
            if run.outputs.shape != ref.shape:
                raise ToolchainError(f"{fmt}: {artifact.name} with {d.name}={size} returned shape {list(run.outputs.shape)}, "
                                     f"the model {list(ref.shape)}", format=fmt, stage="verify")
            checks.append({"dim": d.dim, "name": d.name, "size": size, "input_shape": shape,
                           "max_abs_error": float(np.max(np.abs(run.outputs - ref))),
                           "agreement": float(np.mean(run.outputs.reshape(len(ref), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)))})
    return checks
