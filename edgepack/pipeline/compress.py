"""Step `compress`: the recipe's model stages in order, each evaluated, gated and cached
(compress.engine does the work); without stages the source model goes on unchanged and
the table still shows what it costs and scores."""

from __future__ import annotations

import copy

from edgepack.errors import ConfigError
from edgepack.modelio import example_inputs
from edgepack.pipeline.records import Compressed, Loaded


def _check_teachers(recipe, model, load_model, example) -> None:
    """Load every distillation teacher and compare its (first) output's shape with the
    model's before the first stage runs: a bad teacher fails the build before any work."""
    import torch

    from edgepack.modelio import first_output, to_torch

    def run(m):
        return first_output(m(*to_torch(example if isinstance(example, tuple) else (example,))))

    with torch.no_grad():
        expected = tuple(run(model).shape)
        for spec in recipe.stages:
            for t in getattr(spec.config, "teachers", ()) or ():
                if t.model == "original":
                    continue
                teacher = load_model(t.model, t.weights)
                try:
                    got = tuple(run(teacher).shape)
                except Exception as e:
                    raise ConfigError(f"stage {spec.index} (distill): teacher {t.model!r} fails on the declared "
                                      f"inputs: {type(e).__name__}: {e}") from None
                if got != expected:
                    raise ConfigError(f"stage {spec.index} (distill): teacher {t.model!r} outputs {list(got)}, "
                                      f"the model {list(expected)}; a teacher must predict the same classes")


def _for_passes(inputs: tuple):
    """What passes get as inputs (passes.base.Dataset.x, PassContext.example): the array
    of a one-input model, the tuple of a model with several."""
    return inputs[0] if len(inputs) == 1 else inputs


def _run_stages(plan, loaded: Loaded, say):
    """compress.engine.Compressed for the recipe's stages."""
    from edgepack.compress.engine import run_stages
    from edgepack.compress.evaluate import stage_metric
    from edgepack.passes.base import Dataset, PassContext
    from edgepack.sources.data import load_split
    from edgepack.sources.pytorch import build_untrained, load_factory_model

    recipe, project, pdir = plan.recipe, plan.project, plan.project_dir
    source, evaluation = loaded.source, loaded.evaluation
    classes = loaded.original_outputs[0].shape[1] if project.data.task == "classification" else None
    training = load_split(pdir, project, "training", classes=classes) if project.data.training else None
    if project.data.validation:
        validation, evaluated_on = load_split(pdir, project, "validation", classes=classes), "validation"
    else:
        validation, evaluated_on = evaluation, "evaluation (the project has no data.validation hook)"

    def load_model(ref: str, weights: str | None = None):
        if ref == "original":
            return copy.deepcopy(source.module).eval()
        if not weights:
            raise ConfigError(f"model {ref!r}: no weights given; name a .safetensors file next to it")
        return load_factory_model(pdir, ref, (pdir / weights).resolve(), what=f"model {ref!r}")

    def build_fresh(base: str):
        return build_untrained(pdir, project.model.factory if base == "original" else base, what="model.factory")

    example = _for_passes(example_inputs(project.model.input_specs))
    _check_teachers(recipe, source.module, load_model, example)
    ctx = PassContext(
        training=Dataset(_for_passes(training.x), training.y) if training else None,
        validation=Dataset(_for_passes(validation.x), validation.y),
        load_model=load_model,
        example=example,
        seed=project.compress.seed,
        threads=project.build.threads,
        progress=say,
    )
    return run_stages(recipe, model=copy.deepcopy(source.module),
                      source_key=f"{source.sha256}:{project.model.factory or project.model.program}",
                      project_dir=pdir, factory=project.model.factory,
                      build_fresh=build_fresh if project.model.factory else None, ctx=ctx,
                      evaluate_on=Dataset(_for_passes(validation.x), validation.y), evaluated_on=evaluated_on,
                      cache_dir=pdir / project.compress.cache_dir / "stages", progress=say,
                      scorer=loaded.scorer, gated=stage_metric(project))


def compress(plan, loaded: Loaded, say) -> Compressed:
    from edgepack.compress.evaluate import measure, predict
    from edgepack.devices.costs import model_costs

    project, evaluation = plan.project, loaded.evaluation
    example = _for_passes(example_inputs(project.model.input_specs))
    if plan.recipe.stages:
        staged = _run_stages(plan, loaded, say)
        model, rows, evaluated_on = staged.model, tuple(staged.rows), staged.evaluated_on
        # Parity is checked against the fp32 torch model the artifacts are exported from.
        reference = predict(model, evaluation.x, declared_batch=project.model.declared_batch,
                            names=project.model.output_names)
    else:
        from edgepack.compress.engine import original_row

        model, reference, evaluated_on = loaded.source.module, loaded.original_outputs, "evaluation"
        rows = (original_row(measure(model, evaluation.x, evaluation.y, example, scorer=loaded.scorer).as_dict()),)
    from edgepack.verify.tasks import as_outputs

    scorer = loaded.scorer
    named = as_outputs(scorer.names, reference)
    metrics = scorer.score(named, evaluation.y, reference=as_outputs(scorer.names, loaded.original_outputs))
    return Compressed(model=model, reference=reference, stage_rows=rows, evaluated_on=evaluated_on,
                      accuracy=metrics.get("accuracy"), costs=model_costs(model, example), metrics=metrics)
