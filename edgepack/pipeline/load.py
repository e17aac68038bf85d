"""Step `load`: the source model, the data splits, and the source model's outputs on the
evaluation split (the accuracy every budget is measured against)."""

from __future__ import annotations

import numpy as np

from edgepack.pipeline.records import Loaded


def load(plan, say) -> Loaded:
    from edgepack.compress.evaluate import predict
    from edgepack.modelio import rows
    from edgepack.sources.data import load_split
    from edgepack.sources.pytorch import check_forward, load_source

    project, pdir = plan.project, plan.project_dir
    say("loading the source model and data")
    source = load_source(pdir, project)
    classes = check_forward(source, project)
    calibration = load_split(pdir, project, "calibration", classes=classes)
    evaluation = load_split(pdir, project, "evaluation", classes=classes)
    calib_x = rows(calibration.x, 0, plan.recipe.quantize.calibration_samples or project.data.calibration_samples)
    outputs = predict(source.module, evaluation.x, declared_batch=project.model.declared_batch,
                      names=project.model.output_names)
    return Loaded(source=source, calibration_x=calib_x, evaluation=evaluation, original_outputs=outputs,
                  original_accuracy=float(np.mean(outputs[0].argmax(1) == evaluation.y)))
