"""The `quantize` stage: it sets how every exporter quantizes (the target decides which
precision each format gets), and which weight-preserving rewrites of the fp32 model come
first (cross-layer equalization, bias correction: compress.equalize)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgepack.passes.base import PassConfig

# How the range of every int8 activation is chosen from the calibration data. Each format
# does it with its backend's own machinery (docs/quantization.md lists which):
#   minmax      the smallest and largest value seen
#   percentile  the values at the given percentile of each tail (outliers clipped)
#   entropy     the clipping range whose int8 histogram is closest in KL divergence
#   mse         the clipping range with the least squared quantization error
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")
CalibrationMethod = Literal["minmax", "percentile", "entropy", "mse"]
DEFAULT_PERCENTILE = 99.99


class QuantizeConfig(PassConfig):
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    # asymmetric: int8 activations with a zero point (uses the full range after ReLU);
    # symmetric: zero point 0 (what some accelerators require). Weights are always symmetric.
    activations: Literal["asymmetric", "symmetric"] = "asymmetric"
    # Mixed precision: module names (as in model.named_modules()) kept in float, or "auto":
    # the fewest most sensitive layers that make int8 meet the targets' int8 agreement and
    # SNR floors (compress.mixed_precision), at most max_float_layers of them.
    keep_float: tuple[str, ...] | Literal["auto"] = Field(default=())
    max_float_layers: int = Field(default=8, ge=1)
    # Rank the layers by what int8 costs each (compress.sensitivity); "auto" always does.
    sensitivity: bool = False
    calibration_samples: int | None = Field(default=None, gt=0)
    calibration: CalibrationMethod = "mse"
    # Only with calibration = "percentile": the share of values kept inside the range, in %.
    percentile: float = Field(default=DEFAULT_PERCENTILE, gt=90.0, lt=100.0)
    # Rewrites of the fp32 model before int8 export (compress.equalize); both keep what
    # the model computes, and every format is exported from the rewritten model.
    equalize: bool = False
    bias_correction: bool = False
    # LiteRT static int8 must come out full-integer (every tensor int8 or int32): a model
    # with an op the converter leaves in float is refused. false builds it anyway, with
    # those ops named (type and count) in the build table and the manifest's
    # export.float_ops. keep_float implies float ops and is never refused.
    strict_int8: bool = True
    # Activation ranges tuned on the outputs (compress.range_tuning): the calibrated ranges
    # of the tensors whose int8 noise reaches the outputs most are scaled, one tensor at a
    # time, while the fake-quantized model's outputs on calibration inputs get closer to
    # fp32; every format then scales the same tensors' ranges by the same factors.
    tune_ranges: bool = False
    # What the build's tuning decided, (elements per sample, min, max, mean, factor) per
    # tuned tensor (exporters._tuned_ranges): set by the build, part of the export key.
    tuned_ranges: tuple[tuple[float, float, float, float, float], ...] = ()

    @field_validator("keep_float", mode="before")
    @classmethod
    def _names_or_auto(cls, value):
        if isinstance(value, str) and value != "auto":
            raise ValueError(f"{value!r} is not valid: give a list of module names (as model.named_modules() names them) or \"auto\"")
        return value

    @field_validator("tuned_ranges", mode="before")
    @classmethod
    def _decided_by_the_build(cls, value):
        if value:
            raise ValueError("is decided by the build from tune_ranges = true; remove it")
        return value

    @model_validator(mode="after")
    def _percentile_only_with_its_method(self) -> "QuantizeConfig":
        if "percentile" in self.model_fields_set and self.calibration != "percentile":
            raise ValueError(f"'percentile' is only used with calibration = \"percentile\", not {self.calibration!r}")
        if "max_float_layers" in self.model_fields_set and self.keep_float != "auto":
            raise ValueError("'max_float_layers' is only used with keep_float = \"auto\"")
        return self

    @property
    def auto_keep_float(self) -> bool:
        return self.keep_float == "auto"

    @property
    def decided_by_build(self) -> bool:
        """Options the build resolves from its own analysis before exporting int8
        (keep_float = "auto", tune_ranges): the exports belong to the build."""
        return self.auto_keep_float or self.tune_ranges

    @property
    def analyses_sensitivity(self) -> bool:
        return self.sensitivity or self.auto_keep_float

    def with_keep_float(self, names) -> "QuantizeConfig":
        """These options with `keep_float` resolved to module names (what exporters take)."""
        return self.model_copy(update={"keep_float": tuple(names)})

    def with_tuned_ranges(self, entries) -> "QuantizeConfig":
        """These options with the range tuning's decisions (exporters._tuned_ranges.as_entries)."""
        return self.model_copy(update={"tuned_ranges": tuple(entries)})

    def unresolved(self) -> "QuantizeConfig":
        """What an artifact the build decides nothing for is exported with (a float one):
        no layer kept in float by "auto", no tuned range."""
        return self.model_copy(update={"keep_float": () if self.auto_keep_float else self.keep_float,
                                       "tuned_ranges": ()})

    @property
    def rewrites_model(self) -> bool:
        return self.equalize or self.bias_correction


DEFAULT = QuantizeConfig()
