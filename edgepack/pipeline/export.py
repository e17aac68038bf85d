"""Step `export`: one artifact per (format, precision, dynamic dims), whatever number of
targets ask for it. The exporters own their quantizers and lowering; this step only
decides what to export, from which model, into which workspace folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.pipeline.records import ExportKey


def dynamic_dims(project, target, spec) -> tuple:
    """The dynamic dims an artifact is exported with: the target's, else the project's,
    none when the artifact opts out."""
    if not spec.dynamic:
        return ()
    return tuple(target.dynamic_dims if target.dynamic_dims is not None else project.model.dynamic_dims)


def export_key(project, target, spec) -> ExportKey:
    dims = dynamic_dims(project, target, spec)
    return ExportKey(spec.format, spec.precision, tuple((d.dim, d.name, d.min, d.max) for d in dims), spec.delegate)


def export(plan, key: ExportKey, *, file_name: str, model, loaded, dims: tuple, workspace: Path, say):
    """exporters.ModelArtifact written under `workspace`, in a folder of its own."""
    from edgepack.exporters import ExportRequest
    from edgepack.exporters import export as run_exporter

    from edgepack.pipeline import export_cache

    project = plan.project
    out = workspace / f"{key.format}-{key.precision}-{len(list(workspace.iterdir()))}" / file_name
    out.parent.mkdir(parents=True)
    folder = export_cache.cache_folder(plan)
    cache_key = export_cache.export_cache_key(plan, loaded, key, model=model, file_name=file_name, dims=dims)
    if plan.reuse_exports and (cached := export_cache.lookup(folder, cache_key, out)) is not None:
        say(f"exporting {key.format} {key.precision}: reused an identical earlier export ({folder})")
        return cached
    say(f"exporting {key.format} {key.precision}")
    artifact = run_exporter(key.format, ExportRequest(
        module=model, example=np.zeros(project.model.input_shape, np.float32),
        calibration=loaded.calibration_x, precision=key.precision, out_path=out,
        input_name=project.model.input_name, output_name=project.model.output_name,
        parent_sha256=loaded.source.sha256, quantize=plan.recipe.quantize, dynamic_dims=dims, delegate=key.delegate,
    ))
    export_cache.store(folder, cache_key, artifact)
    return artifact
