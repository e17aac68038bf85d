"""The `quantize` stage: it changes no weights itself; it sets how every exporter
quantizes (the target decides which precision each format gets)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgepack.passes.base import PassConfig


class QuantizeConfig(PassConfig):
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    # asymmetric: int8 activations with a zero point (uses the full range after ReLU);
    # symmetric: zero point 0 (what some accelerators require). Weights are always symmetric.
    activations: Literal["asymmetric", "symmetric"] = "asymmetric"
    # Mixed precision: module names (as in model.named_modules()) kept in float.
    keep_float: tuple[str, ...] = Field(default=())
    calibration_samples: int | None = Field(default=None, gt=0)


DEFAULT = QuantizeConfig()
