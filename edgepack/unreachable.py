"""Artifacts a project cannot reach, known from its configuration before any work.

Some (format, precision) pairs cannot be built from what a project asks for, whatever
the model: LiteRT cannot keep named layers float, so a static int8 .tflite under a
`keep_float` list would be refused by its exporter after minutes of loading, capturing
and calibrating. The plan finds these up front. A target listing one fails at plan time
(exit 2, the reason and the three ways out named), unless the project sets
`[build] skip_unreachable = true`: then the target is built without it and its manifest
lists it under `skipped_artifacts` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unreachable:
    format: str
    precision: str
    reason: str

    def manifest_entry(self) -> dict:
        return {"format": self.format, "precision": self.precision, "reason": self.reason}


def unreachable_artifacts(artifacts, quantize, kind: str = "pytorch") -> list[Unreachable]:
    """The artifacts of a target (its `[[artifacts]]`) that `quantize` (the recipe's
    quantize options) or the source's kind (config.schema.ModelSource.kind) makes
    unreachable, each with the reason."""
    from edgepack.formats import FORMATS, get_format
    from edgepack.sources.foreign import KIND_NAMES

    found = []
    kept = () if quantize is None or quantize.auto_keep_float else tuple(quantize.keep_float or ())
    for a in artifacts:
        steps = get_format(a.format).steps_for(kind)
        if steps is None:
            reachable = [f.name for f in FORMATS if f.steps_for(kind) is not None]
            found.append(Unreachable(a.format, a.precision,
                                     f"{a.format} cannot be built from {KIND_NAMES[kind]} (model.{kind}); from it edgepack "
                                     f"builds {', '.join(reachable)}"))
        elif a.precision not in steps:
            found.append(Unreachable(a.format, a.precision,
                                     f"{a.format} {a.precision} cannot be built from {KIND_NAMES[kind]}; valid: "
                                     f"{', '.join(steps)}"))
        elif (kind in ("keras", "saved_model") and a.format == "tflite" and a.precision == "int8" and quantize is not None
              and "calibration" in quantize.model_fields_set and quantize.calibration != "minmax"):
            found.append(Unreachable(a.format, a.precision,
                                     f"quantize.calibration {quantize.calibration!r}: TensorFlow's converter, which "
                                     f"writes LiteRT int8 from {KIND_NAMES[kind]}, calibrates min-max only"))
        elif a.format == "tflite" and a.precision == "int8" and kept:
            # exporters/_keep_float.py: litert-torch 0.10's quantizer refuses to leave a
            # module unannotated, and its converter quantizes every layer regardless.
            found.append(Unreachable(a.format, a.precision,
                                     f"quantize.keep_float {list(kept)}: LiteRT's int8 quantizer cannot keep layers "
                                     "float (litert-torch refuses set_module_name(name, None) and its converter "
                                     "quantizes every layer)"))
    return found


def plan_problem(where: str, target_name: str, item: Unreachable) -> str:
    return (f"{where}: target {target_name} lists {item.format} {item.precision}, which this project cannot reach: "
            f"{item.reason}; remove that artifact from the target, change the project, or set [build] "
            "skip_unreachable = true to build the target's other artifacts and record this one as skipped")
