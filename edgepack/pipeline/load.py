"""Step `load`: the source model, the data splits, and the source model's outputs and
scores on the evaluation split (what every budget is measured against)."""

from __future__ import annotations

from edgepack.pipeline.records import Loaded


def load(plan, say) -> Loaded:
    from edgepack.compress.evaluate import predict
    from edgepack.modelio import rows
    from edgepack.sources.data import load_split
    from edgepack.sources.labels import check_regression_shape
    from edgepack.sources.pytorch import check_forward, load_foreign_source, load_source
    from edgepack.verify.tasks import as_outputs, check_gated_metric, make_scorer

    project, pdir = plan.project, plan.project_dir
    say("loading the source model and data")
    if project.model.kind == "pytorch":
        source = load_source(pdir, project)
        classes = check_forward(source, project)
    else:
        source, classes = load_foreign_source(pdir, project)
        # ONNX int8 calibration uses torchao's observers, which log through torch's own
        # loggers (the capture step quiets them for a PyTorch source).
        import torch  # noqa: F401

        from edgepack._quiet import quiet_torch_loggers

        quiet_torch_loggers()
    scorer = make_scorer(pdir, project, classes=classes)
    calibration = load_split(pdir, project, "calibration", classes=classes)
    evaluation = load_split(pdir, project, "evaluation", classes=classes)
    calib_x = rows(calibration.x, 0, plan.recipe.quantize.calibration_samples or project.data.calibration_samples)
    outputs = predict(source.module, evaluation.x, declared_batch=project.model.declared_batch,
                      names=project.model.output_names)
    # The task's metrics read the first declared output; every output is compared by name.
    named = as_outputs(scorer.names, outputs)
    if project.data.task == "regression":
        first = scorer.names[0]
        check_regression_shape(evaluation.y, named[first], what=f"data.evaluation hook {project.data.evaluation!r}",
                               output_name=first)
    metrics = scorer.score(named, evaluation.y, reference=named)
    for tp in plan.targets:
        check_gated_metric(scorer, tp.target.budgets, metrics, where=f"target {tp.target.name}")
    return Loaded(source=source, calibration_x=calib_x, evaluation=evaluation, original_outputs=outputs,
                  original_accuracy=metrics.get("accuracy"), scorer=scorer, original_metrics=metrics)
