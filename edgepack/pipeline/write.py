"""Step `write`: a target's manifest from the records, and its dist folder, assembled
aside and swapped in at the end. A target that failed a gate goes to
`<target>.rejected/`, one with an artifact that could not be built to
`<target>.incomplete/`, for inspection; both leave `<target>/` as it was."""

from __future__ import annotations

import shutil

from edgepack.pipeline.records import ArtifactRecord, Compressed, Loaded, Verdict
from edgepack.release.manifest import MANIFEST_SCHEMA


def manifest(plan, target_plan, loaded: Loaded, compressed: Compressed, records: list[ArtifactRecord],
             verdict: Verdict, toolchain: dict, failed: list = (), *, timings: dict | None = None) -> dict:
    """The target's manifest as the build knows it; release.manifest.complete_dist adds
    signatures, data hashes and test vectors when the dist is written."""
    from edgepack.devices.latency import calibration_record

    project, source, evaluation = plan.project, loaded.source, loaded.evaluation
    specs, names = project.model.input_specs, project.model.output_names
    return {
        "schema": MANIFEST_SCHEMA,
        "project": {"name": project.project.name, "version": project.project.version},
        "target": target_plan.target.name,
        "device_profile": target_plan.device.name,
        "source": {
            "sha256": source.sha256,
            "kind": source.kind,
            "file": source.path.name,
            "parameters": source.parameters,
            "fp32_weight_bytes": source.fp32_bytes,
            "input_shape": list(specs[0].shape),
            "activation_elements": compressed.costs.activation_elements,
            "input_name": specs[0].name,
            "output_name": names[0],
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype,
                        "dynamic_dims": [d.model_dump() for d in s.dynamic_dims]} for s in specs],
            "outputs": [{"name": n, "shape": [specs[0].shape[0], *out.shape[1:]], "dtype": str(out.dtype)}
                        for n, out in zip(names, compressed.reference)],
        },
        "evaluation": {"split": "evaluation", "samples": len(evaluation), "task": project.data.task,
                       "reference_accuracy": None if loaded.original_accuracy is None else round(loaded.original_accuracy, 6),
                       "compressed_accuracy": None if compressed.accuracy is None else round(compressed.accuracy, 6),
                       "reference_metrics": {k: round(v, 6) for k, v in loaded.original_metrics.items()},
                       "compressed_metrics": {k: round(v, 6) for k, v in compressed.metrics.items()},
                       **({"metric_hook": project.data.metric} if project.data.metric else {})},
        "recipe": plan.recipe.as_dict(),
        "stages": [r.as_dict() for r in compressed.stage_rows],
        "stages_evaluated_on": compressed.evaluated_on,
        "calibration": {"samples": int(len(loaded.calibration_x[0]))},
        "latency_calibration": calibration_record(plan.latency_calibration, target_plan.device),
        "toolchain": toolchain,
        "budgets": target_plan.target.budgets.model_dump(),
        "gates": {"passed": verdict.passed, "failures": list(verdict.failures), "latency": verdict.latency_note,
                  "latency_gate": verdict.latency_gate},
        "artifacts": [{**r.manifest_entry(target_plan.target.budgets), "gates": [c.to_json() for c in verdict.checks.get(r.file, ())]}
                      for r in records],
        **({"failed_artifacts": [f.manifest_entry() for f in failed]} if failed else {}),
        **({"skipped_artifacts": [u.manifest_entry() for u in target_plan.skipped]} if target_plan.skipped else {}),
        **({"timings_s": dict(timings)} if timings else {}),
    }


def write(plan, target_plan, loaded: Loaded, compressed: Compressed, records: list[ArtifactRecord],
          verdict: Verdict, manifest_doc: dict, say):
    """(folder written, finished manifest)."""
    from edgepack.release.dist import staged_folder
    from edgepack.release.manifest import complete_dist

    final = plan.output_dir / f"{target_plan.target.name}{verdict.folder_suffix}"
    say(f"writing {final}")
    with staged_folder(final) as staging:
        for r in records:
            shutil.copyfile(r.artifact.path, staging / r.file)
        finished = complete_dist(
            staging, manifest_doc, project_dir=plan.project_dir, description=plan.project.project.description,
            calibration_x=loaded.calibration_x, evaluation_x=loaded.evaluation.x, evaluation_y=loaded.evaluation.y,
            reference=compressed.reference, outputs={r.file: r.verified.recorded for r in records},
            artifact_paths={r.file: staging / r.file for r in records},
            input_names=[s.name for s in plan.project.model.input_specs], output_names=plan.project.model.output_names,
        )
    for suffix in (".rejected", ".incomplete"):   # a stale build set aside would contradict this one
        if suffix != verdict.folder_suffix:
            shutil.rmtree(plan.output_dir / f"{target_plan.target.name}{suffix}", ignore_errors=True)
    return final, finished
