"""Step `export`: one artifact per (format, precision, dynamic dims, quantization options),
whatever number of targets ask for it. The exporters own their quantizers and lowering;
this step only decides what to export, from which model, into which workspace folder.

Int8 artifacts may be exported from a rewrite of the model (the quantize stage's
`equalize` and `bias_correction`): made once per build and shared by every format."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from edgepack.modelio import example_inputs, rows
from edgepack.pipeline.records import ExportKey

# Inputs the rewritten float model is compared with the original on.
REWRITE_CHECK_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class Rewritten:
    """The model int8 artifacts are exported from, and what was done to it (recorded in
    each such artifact's `export` details)."""

    model: object
    details: dict


def dynamic_dims(project, target, spec) -> tuple:
    """The dynamic dims an artifact is exported with, per input: the target's (applied to
    every input), else each input's own; () when there are none or the artifact opts out."""
    specs = project.model.input_specs
    if not spec.dynamic:
        return ()
    if target.dynamic_dims is not None:
        dims = tuple(tuple(target.dynamic_dims) for _ in specs)
    else:
        dims = tuple(tuple(s.dynamic_dims) for s in specs)
    return dims if any(dims) else ()


def quantization_key(precision: str, quantize) -> str:
    """The quantize stage's options, canonically, for the precisions they shape (int8);
    empty for float artifacts, which no quantization option changes."""
    if not precision.startswith("int8") or quantize is None:
        return ""
    return json.dumps(quantize.model_dump(mode="json"), sort_keys=True)


def export_key(project, target, spec, quantize=None) -> ExportKey:
    dims = dynamic_dims(project, target, spec)
    names = [s.name for s in project.model.input_specs]
    return ExportKey(spec.format, spec.precision,
                     tuple((name, d.dim, d.name, d.min, d.max) for name, per in zip(names, dims) for d in per),
                     spec.delegate, quantization_key(spec.precision, quantize))


def rewrite_for_int8(plan, model, loaded, say, *, opts=None) -> Rewritten | None:
    """The quantize stage's rewrites of `model` (compress.equalize, compress.bias_correction),
    or None when it asks for none. Equalization is checked against the model it started
    from on real inputs, and the change is recorded (nonzero only where a ReLU6 became
    ReLU). `opts`: the quantize stage's options with keep_float resolved (default: the plan's)."""
    opts = opts or plan.recipe.quantize
    if not opts.rewrites_model:
        return None
    import torch

    from edgepack.compress.evaluate import predict
    from edgepack.errors import ToolchainError

    details: dict = {}
    out = model
    if opts.equalize:
        from edgepack.compress.equalize import equalize

        say("equalizing weight ranges across layer pairs")
        try:
            out, report = equalize(model, torch.from_numpy(example_inputs(plan.project.model.input_specs)[0]),
                                   loaded.calibration_x[0])
        except ToolchainError:
            raise
        except Exception as e:  # the model's own forward code: any type
            raise ToolchainError(f"equalize: {type(e).__name__}: {str(e)[:200]}; set equalize = false",
                                 stage="equalize") from e
        x = rows(loaded.evaluation.x, 0, REWRITE_CHECK_SAMPLES)
        batch = plan.project.model.declared_batch
        if model is loaded.source.module and len(loaded.original_outputs) == 1:
            # The source's outputs on these rows were computed when it was loaded.
            before = loaded.original_outputs[0][: len(x[0])]
        else:
            before = predict(model, x, declared_batch=batch)[0]
        after = predict(out, x, declared_batch=batch)[0]
        report["fp32_max_abs_change"] = float(np.max(np.abs(before - after)))
        report["fp32_snr_db"] = _snr_or_none(before, after)
        details["equalization"] = report
    if opts.bias_correction:
        from edgepack.compress.bias_correction import correct_biases

        say("correcting biases for int8 weights")
        try:
            out, report = correct_biases(out, loaded.calibration_x[0], per_channel=opts.weights == "per_channel",
                                         skip=opts.keep_float)
        except Exception as e:  # the model's own forward code: any type
            raise ToolchainError(f"bias correction: the model does not run on {min(len(loaded.calibration_x[0]), 128)} "
                                 f"calibration inputs at once ({type(e).__name__}: {str(e)[:200]}); "
                                 "set bias_correction = false", stage="bias_correction") from e
        details["bias_correction"] = report
    return Rewritten(out, details)


def _snr_or_none(reference: np.ndarray, output: np.ndarray) -> float | None:
    from edgepack.verify.metrics import snr_db

    snr = snr_db(reference, output)
    return None if math.isinf(snr) else round(snr, 2)


def export(plan, key: ExportKey, *, file_name: str, model, loaded, dims: tuple, workspace: Path, say,
           rewritten: Rewritten | None = None, quantize=None):
    """exporters.ModelArtifact written under `workspace`, in a folder of its own. An int8
    key is exported from `rewritten` when given, and its details say what was rewritten.
    `quantize`: the options int8 keys are exported with (keep_float resolved; default: the plan's)."""
    from edgepack.exporters import ExportRequest
    from edgepack.exporters import export as run_exporter

    from edgepack.pipeline import export_cache

    project = plan.project
    rewrite = rewritten if rewritten is not None and key.precision.startswith("int8") else None
    out = workspace / f"{key.format}-{key.precision}-{len(list(workspace.iterdir()))}" / file_name
    out.parent.mkdir(parents=True)
    folder = export_cache.cache_folder(plan)
    cache_key = export_cache.export_cache_key(plan, loaded, key, model=model, file_name=file_name, dims=dims)
    if plan.reuse_exports and cache_key and (cached := export_cache.lookup(folder, cache_key, out)) is not None:
        say(f"exporting {key.format} {key.precision}: reused an identical earlier export ({folder})")
        return cached
    say(f"exporting {key.format} {key.precision}")
    artifact = run_exporter(key.format, ExportRequest(
        module=rewrite.model if rewrite else model, example=example_inputs(project.model.input_specs),
        calibration=loaded.calibration_x, precision=key.precision, out_path=out,
        input_names=tuple(s.name for s in project.model.input_specs), output_names=project.model.output_names,
        parent_sha256=loaded.source.sha256, quantize=quantize or plan.recipe.quantize, dynamic_dims=dims, delegate=key.delegate,
        source_kind=project.model.kind,
    ))
    if rewrite:
        artifact = dataclasses.replace(artifact, details={**artifact.details, **rewrite.details})
    if cache_key:
        export_cache.store(folder, cache_key, artifact)
    return artifact
