"""What every int8 export of a build shares, decided once before the first one: the
rewritten float model (equalization, bias correction), with `tune_ranges` the activation
ranges tuned on the outputs (compress.range_tuning), the layers' sensitivity to int8,
and with `keep_float = "auto"` the layers kept in float (compress.mixed_precision).

The search runs on the fake-quantized torch model against the strictest int8 agreement
and SNR floors among the build's targets; the formats are then exported once with the
layers it found, and each artifact is verified in its own runtime as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgepack.errors import BudgetError, ToolchainError
from edgepack.pipeline import export as export_step

# Inputs each layer is measured on alone: enough to rank layers, cheap on large splits.
SENSITIVITY_SAMPLES = 32
# The search checks the floors on the evaluation split, up to this many inputs.
SEARCH_SAMPLES = 2048
# Layers listed in the manifest's sensitivity, most sensitive first.
SENSITIVITY_TOP = 10


@dataclass(frozen=True)
class Int8Choices:
    quantize: object                # QuantizeConfig with keep_float resolved to module names
    rewritten: object               # export_step.Rewritten | None
    details: dict                   # `range_tuning`, `sensitivity` and `mixed_precision` for every int8 artifact's export details


def int8_floors(plan) -> tuple[float, float]:
    """The strictest int8 agreement and SNR floors among the targets that ship int8."""
    budgets = [tp.target.budgets for tp in plan.targets
               if any(a.precision.startswith("int8") for a in tp.target.artifacts)]
    budgets = budgets or [tp.target.budgets for tp in plan.targets]
    return (max(b.min_agreement_pct["int8"] for b in budgets), max(b.min_snr_db["int8"] for b in budgets))


def choose(plan, model, loaded, compressed, say) -> Int8Choices:
    opts = plan.recipe.quantize
    if not (opts.analyses_sensitivity or opts.tune_ranges):
        return Int8Choices(opts, export_step.rewrite_for_int8(plan, model, loaded, say), {})
    # Bias correction skips the layers kept in float, which the search has not chosen
    # yet: it runs on every layer first, and again without the chosen ones.
    first = opts.unresolved()
    rewritten = export_step.rewrite_for_int8(plan, model, loaded, say, opts=first)
    float_model = rewritten.model if rewritten else model
    from edgepack.compress import switchable_int8

    started = time.perf_counter()
    try:
        # A one-input model (the plan refuses these analyses for several inputs).
        switchable = switchable_int8.build(float_model, np.zeros(plan.project.model.input_shape, np.float32),
                                           loaded.calibration_x[0], first)
    except Exception as e:   # the model's own code under torch.export and the PT2E quantizer: any type
        asked = ", ".join(name for name, on in (("sensitivity", opts.analyses_sensitivity), ("tune_ranges", opts.tune_ranges))
                          if on)
        raise ToolchainError(f"int8 {asked}: the model cannot be fake-quantized with PT2E ({type(e).__name__}: "
                             f"{str(e)[:200]}); list keep_float by hand, and set sensitivity and tune_ranges = false",
                             stage="sensitivity") from e
    built = time.perf_counter() - started
    details: dict = {}
    resolved = first
    if opts.tune_ranges:
        resolved, details["range_tuning"] = _tune_ranges(plan, switchable, loaded, compressed, first, say)
    if not opts.analyses_sensitivity:
        return Int8Choices(resolved, rewritten, details)
    from edgepack.compress import sensitivity

    say("measuring each layer's int8 sensitivity")
    x, reference = loaded.evaluation.x[0], compressed.reference[0]   # the input; the first output (the logits)
    ranked = sensitivity.analyse(switchable, x[:SENSITIVITY_SAMPLES], reference[:SENSITIVITY_SAMPLES], progress=say)
    details["sensitivity"] = {**ranked.as_dict(SENSITIVITY_TOP), "seconds": round(built + ranked.seconds, 2)}
    if not opts.auto_keep_float:
        return Int8Choices(resolved, rewritten, details)
    from edgepack.compress.mixed_precision import search

    min_agreement, min_snr = int8_floors(plan)
    found = search(switchable, ranked.ranking(), x[:SEARCH_SAMPLES], reference[:SEARCH_SAMPLES],
                   min_agreement_pct=min_agreement, min_snr_db=min_snr, max_float_layers=opts.max_float_layers,
                   progress=say)
    if not found.met:
        raise BudgetError(found.failure())
    resolved = resolved.with_keep_float(found.keep_float)
    if found.keep_float and opts.bias_correction:
        rewritten = export_step.rewrite_for_int8(plan, model, loaded, say, opts=resolved)
    say(f"keep_float auto: {len(found.keep_float)} layer(s) in float: {', '.join(found.keep_float) or 'none'}")
    return Int8Choices(resolved, rewritten, {**details, "mixed_precision": found.as_dict()})


def _tune_ranges(plan, switchable, loaded, compressed, opts, say):
    """Output-aware activation ranges (compress.range_tuning) on calibration inputs,
    against what the fp32 model (before any int8 rewrite) outputs on them."""
    from edgepack.compress import range_tuning
    from edgepack.compress.evaluate import predict
    from edgepack.modelio import rows

    say("tuning activation ranges on the outputs")
    n = max(range_tuning.RANK_SAMPLES, range_tuning.SEARCH_SAMPLES)
    x = rows(loaded.calibration_x, 0, n)
    reference = predict(compressed.model, x, declared_batch=plan.project.model.declared_batch)[0]
    tuning = range_tuning.tune(switchable, x[0], reference, progress=say)
    say(f"range tuning: {len(tuning.tuned)} activation range(s) rescaled; output SNR on calibration inputs "
        f"{tuning.snr_before_db:.1f} -> {tuning.snr_after_db:.1f} dB")
    return opts.with_tuned_ranges(tuning.entries()), tuning.as_dict()
