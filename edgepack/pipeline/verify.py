"""Step `verify`: an artifact in its own runtime on the evaluation split, compared with
the fp32 model it was exported from (parity, per output) and with the original model's
scores for the project's task (the budgets); dynamic dims are run at two sizes each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.devices.base import run_declared
from edgepack.errors import ToolchainError
from edgepack.pipeline.records import Verified
from edgepack.release.manifest import TEST_VECTOR_SAMPLES


def verify(runner, artifact, *, fmt: str, precision: str, loaded, compressed, dims: tuple, model, interface,
           settings, say, delegate: str | None = None) -> Verified:
    """`interface`: config.schema.ModelSource (input_specs, output_names)."""
    from edgepack.verify.metrics import compare

    evaluation = loaded.evaluation
    say(f"verifying {fmt} {precision} on {len(evaluation)} samples")
    run = run_declared(runner, artifact.path, fmt, evaluation.x, input_names=[s.name for s in interface.input_specs],
                       output_names=interface.output_names, warmup=settings.warmup, iterations=settings.iterations,
                       threads=settings.threads, delegate=delegate)
    _check_output_shapes(fmt, artifact.path, run.outputs, compressed.reference, interface.output_names)
    # Parity with the model the artifact was exported from, every output by its declared
    # name; the task's scores (of the first output, and the metric hook's) against the
    # original model's (they include what compression cost).
    parity = compare(compressed.reference, run.outputs, evaluation.y, scorer=loaded.scorer).against(loaded.original_metrics)
    checks: tuple = ()
    if dims:
        say(f"checking {fmt} {precision} at two sizes of each dynamic dim")
        checks = tuple(check_dynamic(runner, artifact.path, fmt, dims, model, evaluation.x, interface, delegate))
    return Verified(parity=parity, latency_ms=run.latency_dict(),
                    recorded=tuple(o[:TEST_VECTOR_SAMPLES] for o in run.outputs), dynamic_checks=checks,
                    delegate=None if delegate is None else delegate_record(fmt, delegate, artifact.details, run.delegate))


def _check_output_shapes(fmt: str, path: Path, outputs: tuple, reference: tuple, names) -> None:
    for name, got, want in zip(names, outputs, reference):
        if got.shape != want.shape:
            raise ToolchainError(f"{fmt}: {path.name} returned output {name!r} of shape {list(got.shape)}, "
                                 f"the model {list(want.shape)}", format=fmt, stage="verify")


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


def _sized_inputs(specs, per_input_dims, eval_x: tuple, name: str, size: int, rng) -> tuple:
    """Inputs with every dynamic dim called `name` (one dim shared by several inputs, as a
    batch is) set to `size`: real evaluation samples where only the batch changes, else
    fixed pseudo-random values (float inputs) or zeros (integer inputs: valid ids)."""
    shapes = []
    for spec, dims in zip(specs, per_input_dims):
        shape = list(spec.shape)
        for d in dims:
            if d.name == name:
                shape[d.dim] = size
        shapes.append(shape)
    if all(tuple(s[1:]) == tuple(x.shape[1:]) and s[0] <= len(x) for s, x in zip(shapes, eval_x)):
        return tuple(np.ascontiguousarray(x[: s[0]]) for s, x in zip(shapes, eval_x))
    return tuple(rng.standard_normal(s).astype(spec.dtype) if spec.is_float else np.zeros(s, dtype=spec.dtype)
                 for s, spec in zip(shapes, specs))


def check_dynamic(runner, artifact: Path, fmt: str, dims, model, eval_x: tuple, interface,
                  delegate: str | None = None) -> list[dict]:
    """Run the artifact at two sizes of every dynamic dim and compare with the torch model
    on the same inputs: the batch dim on real evaluation samples, other dims on fixed
    pseudo-random inputs of that size. A size the runtime refuses fails the build (exit 3).
    `dims`: per input, its dynamic dims; a name shared by several inputs is one check."""
    from edgepack.compress.evaluate import predict

    specs, names = interface.input_specs, interface.output_names
    several = len(specs) > 1
    rng = np.random.default_rng(0)
    checks = []
    seen: set[str] = set()
    for owner, per_input in zip(specs, dims):
        for d in per_input:
            if d.name in seen:
                continue
            seen.add(d.name)
            for size in sorted({d.min, min(d.max, max(d.min + 1, 7))}):
                x = _sized_inputs(specs, dims, eval_x, d.name, size, rng)
                batch = len(x[0])
                try:
                    run = run_declared(runner, artifact, fmt, x, input_names=[s.name for s in specs], output_names=names,
                                       warmup=0, iterations=1, threads=1, batch=batch, delegate=delegate)
                except ToolchainError as e:
                    raise ToolchainError(f"{fmt}: {artifact.name} was exported with dynamic {d.name} in [{d.min}, {d.max}] "
                                         f"but fails at {d.name}={size}: {e}", format=fmt, stage="verify") from e
                ref = predict(model, x, declared_batch=batch, names=names)
                _check_output_shapes(fmt, artifact, run.outputs, ref, names)
                got, want = run.outputs[0], ref[0]
                checks.append({**({"input": owner.name} if several else {}), "dim": d.dim, "name": d.name, "size": size,
                               "input_shape": list(x[specs.index(owner)].shape),
                               "max_abs_error": max(float(np.max(np.abs(o.astype(np.float64) - r))) for o, r in zip(run.outputs, ref)),
                               "agreement": float(np.mean(got.reshape(len(want), -1).argmax(1) == want.reshape(len(want), -1).argmax(1)))})
    return checks
