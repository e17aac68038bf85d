"""Typed, frozen schemas for what users write: a project (`edgepack.toml`), a deployment
target (`targets/*.toml`) and a device profile (`profiles/*.toml`).

Every model forbids unknown keys: a misspelt option is an error, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from edgepack.names import Name, Version


def _registered_format(name: str) -> str:
    from edgepack.errors import ConfigError
    from edgepack.formats import get_format

    try:
        return get_format(name).name
    except ConfigError as e:
        raise ValueError(str(e)) from None


# A format registered in edgepack.formats (which also knows each one's file extension).
FormatName = Annotated[str, AfterValidator(_registered_format)]
# int8: static (calibrated activations); int8-dynamic: int8 weights, activations quantized
# at run time; fp16: half-precision weights and compute where the runtime has it.
Precision = Literal["fp32", "fp16", "int8", "int8-dynamic"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8-dynamic")

_HOOK = re.compile(r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_hook(value: str) -> str:
    if not _HOOK.match(value):
        raise ValueError(f"expected 'file.py:function', got {value!r}")
    return value


# --------------------------------------------------------------------------- project


class ProjectInfo(Strict):
    # Both become part of the release's folder and archive name (edgepack.names).
    name: Name
    version: Version = "0.0.0"
    description: str = ""


class DynamicDim(Strict):
    """An input dimension the artifacts accept at any size in [min, max] (batch, sequence
    length...). Formats whose converter or runtime cannot do it fail with a clear error;
    an artifact can opt out with `dynamic = false`."""

    dim: int = Field(ge=0)
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    min: int = Field(default=1, ge=1)
    max: int = Field(ge=2)

    @model_validator(mode="after")
    def _range(self) -> "DynamicDim":
        if self.max <= self.min:
            raise ValueError(f"max ({self.max}) must be larger than min ({self.min})")
        return self


# The element types an input may have. Float inputs are calibrated and quantized with the
# model's activations; integer and bool inputs (token ids, masks, indices) never are.
InputDtype = Literal["float32", "float16", "int64", "int32", "uint8", "bool"]
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float16")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a valid name: letters, digits and _, not starting with a digit "
                         "(it names a tensor in every format's signature)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


def _positive_shape(v: tuple[int, ...]) -> tuple[int, ...]:
    if not v or any(d <= 0 for d in v):
        raise ValueError(f"every dimension must be a positive integer, got {list(v)}")
    return v


def _check_dims(dims: tuple[DynamicDim, ...], shape: tuple[int, ...], shape_field: str) -> None:
    seen = set()
    for d in dims:
        if d.dim >= len(shape):
            raise ValueError(f"dynamic_dims: dim {d.dim} is outside {shape_field} {list(shape)}")
        if d.dim in seen:
            raise ValueError(f"dynamic_dims: dim {d.dim} is listed twice")
        seen.add(d.dim)


class InputSpec(Strict):
    """One input of the model, in the order forward() takes it: its name (carried into
    every format's signature), its shape at deployment, element type and dynamic dims."""

    name: Identifier
    shape: Annotated[tuple[int, ...], AfterValidator(_positive_shape)]
    dtype: InputDtype = "float32"
    dynamic_dims: tuple[DynamicDim, ...] = ()

    @model_validator(mode="after")
    def _dims_inside_shape(self) -> "InputSpec":
        _check_dims(self.dynamic_dims, self.shape, "shape")
        return self

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


class OutputSpec(Strict):
    """One output of the model, in the order forward() returns them (or a key of the dict
    it returns)."""

    name: Identifier


class ModelSource(Strict):
    """Where the trained model comes from, exactly one of: a factory plus safetensors
    weights, a `torch.export` program (.pt2), a Keras model (`.keras`, loaded in Keras'
    safe mode; `custom_objects` names a project hook returning the classes of its custom
    layers), an ONNX model (`.onnx`), or a TensorFlow SavedModel folder (`saved_model`;
    `signature` names the signature to build, default "serving_default"). `kind` says which.

    Its interface is written either as the one-input shorthand (`input_shape`,
    `input_dtype`, `input_name`, `output_name`, `dynamic_dims`) or as `[[model.inputs]]`
    and `[[model.outputs]]` tables; `input_specs` and `output_names` are the one form
    everything downstream reads."""

    factory: str | None = None
    weights: str | None = None
    program: str | None = None
    keras: str | None = None
    custom_objects: str | None = None
    onnx: str | None = None
    saved_model: str | None = None
    signature: Identifier | None = None
    input_shape: Annotated[tuple[int, ...], AfterValidator(_positive_shape)] | None = None
    input_dtype: InputDtype = "float32"
    input_name: Identifier = "input"
    output_name: Identifier = "logits"
    dynamic_dims: tuple[DynamicDim, ...] = ()
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()

    @field_validator("factory", "custom_objects")
    @classmethod
    def _factory_form(cls, v: str | None) -> str | None:
        return None if v is None else _check_hook(v)

    @field_validator("inputs", "outputs")
    @classmethod
    def _distinct_names(cls, v: tuple, info) -> tuple:
        names = [item.name for item in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"name {twice[0]!r} is used twice; every {info.field_name[:-1]} needs its own name")
        return v

    @model_validator(mode="after")
    def _one_interface(self) -> "ModelSource":
        given = self.model_fields_set
        shorthand = sorted(given & {"input_shape", "input_dtype", "input_name", "dynamic_dims"})
        if self.inputs and shorthand:
            raise ValueError(f"give either [[model.inputs]] or the one-input shorthand ({', '.join(shorthand)}), not both")
        if self.outputs and "output_name" in given:
            raise ValueError("give either [[model.outputs]] or output_name, not both")
        if not self.inputs and self.input_shape is None:
            raise ValueError("give model.input_shape (one input) or [[model.inputs]] tables (name, shape, dtype)")
        if self.input_shape is not None:
            _check_dims(self.dynamic_dims, self.input_shape, "input_shape")
        both = sorted(set(i.name for i in self.input_specs) & set(self.output_names))
        if both:
            raise ValueError(f"{both[0]!r} names both an input and an output; the formats need distinct names")
        batches = {i.shape[0] for i in self.input_specs}
        if len(batches) > 1:
            raise ValueError(f"inputs: every input's first dim is the batch and must agree, got {sorted(batches)}")
        return self

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        """The inputs in the order forward() takes them."""
        if self.inputs:
            return self.inputs
        return (InputSpec(name=self.input_name, shape=self.input_shape, dtype=self.input_dtype,
                          dynamic_dims=self.dynamic_dims),)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The outputs in the order forward() returns them."""
        return tuple(o.name for o in self.outputs) or (self.output_name,)

    @property
    def declared_batch(self) -> int:
        return self.input_specs[0].shape[0]

    @property
    def kind(self) -> str:
        """"pytorch" (a factory or a .pt2 program), "keras", "onnx" or "saved_model"."""
        return ("keras" if self.keras else "onnx" if self.onnx else "saved_model" if self.saved_model
                else "pytorch")

    @property
    def file(self) -> str:
        """The source's model file, relative to the project."""
        return self.keras or self.onnx or self.saved_model or self.program or self.weights

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSource":
        given = [name for name, v in (("factory + weights", self.factory or self.weights), ("program", self.program),
                                      ("keras", self.keras), ("onnx", self.onnx), ("saved_model", self.saved_model))
                 if v]
        if len(given) > 1:
            raise ValueError(f"give one model source, not {' and '.join(given)}: 'factory' + 'weights' "
                             "(.safetensors), 'program' (.pt2), 'keras' (.keras), 'onnx' (.onnx) or 'saved_model' "
                             "(a SavedModel folder)")
        if not given:
            raise ValueError("give 'factory' (file.py:function) and 'weights' (.safetensors), 'program' (.pt2), "
                             "'keras' (.keras), 'onnx' (.onnx) or 'saved_model' (a SavedModel folder)")
        if given == ["factory + weights"] and not (self.factory and self.weights):
            raise ValueError("give 'factory' (file.py:function) and 'weights' (.safetensors), or 'program' (.pt2)")
        if self.custom_objects and not self.keras:
            raise ValueError("custom_objects is for a Keras source (model.keras)")
        if self.signature and not self.saved_model:
            raise ValueError("signature is for a SavedModel source (model.saved_model)")
        return self


# What the model computes, which decides what its labels are and what it is scored by
# (edgepack/verify/tasks.py): class logits scored by top-1/top-k accuracy; values scored
# by MAE/RMSE against float labels; embeddings scored by cosine similarity to the fp32
# model's; "none": no labels, parity with the fp32 model only.
Task = Literal["classification", "regression", "embedding", "none"]
TASKS: tuple[str, ...] = ("classification", "regression", "embedding", "none")


class DataHooks(Strict):
    """Functions in the project's own Python files returning `(inputs, labels)`: the inputs
    as one numpy array (a one-input model), or a tuple in declared order or a dict keyed by
    input name (several inputs); the labels as one array (sources.labels checks them for
    the task). For tasks "embedding" and "none" the labels may be omitted: `(inputs, None)`,
    or the inputs alone (one array, or a dict by input name; a bare tuple would read as
    (inputs, labels)).

    `validation` is what compression stages are evaluated and gated on; without it the
    evaluation split is used (and the stage table says so). `metric` is the project's own
    scoring function, called with (outputs by name, labels) and returning named numbers."""

    calibration: str
    evaluation: str
    training: str | None = None
    validation: str | None = None
    task: Task = "classification"
    # Classification only: the k of top-k accuracy. None: 5 when the model has 10 or more
    # classes, else top-k is not measured.
    top_k: int | None = Field(default=None, ge=2)
    metric: str | None = None
    calibration_samples: int = Field(default=256, gt=0)

    @field_validator("calibration", "evaluation", "training", "validation", "metric")
    @classmethod
    def _hook_form(cls, v: str | None) -> str | None:
        return None if v is None else _check_hook(v)

    @model_validator(mode="after")
    def _top_k_is_for_classes(self) -> "DataHooks":
        if self.top_k is not None and self.task != "classification":
            raise ValueError(f"top_k is a classification setting; task is {self.task!r}")
        return self


class BuildSettings(Strict):
    targets: tuple[str, ...] = ("android",)
    output_dir: str = "dist"
    threads: int = Field(default=1, ge=1, le=64)
    warmup: int = Field(default=10, ge=0)
    iterations: int = Field(default=50, ge=1)
    # A calibration file written by `edgepack profile --runner ssh|adb --latency-calibration FILE`
    # (relative to the project): the only way a build's latency estimates are calibrated,
    # per format, precision and thread count (devices/estimate.py).
    latency_calibration: str | None = None
    # A target's artifact the project cannot reach (edgepack/unreachable.py) fails the plan;
    # true builds the target's other artifacts and lists it under skipped_artifacts.
    skip_unreachable: bool = False


class CompressSettings(Strict):
    """The compression recipe: a named preset (recipes/*.toml) or stages written inline.
    Each stage is a table with `pass = "<name>"` and that pass's typed parameters; the
    stages are validated against the pass registry when the plan is made."""

    recipe: str | None = None
    stages: tuple[dict[str, Any], ...] = ()
    max_total_drop_pt: float = Field(default=1.0, ge=0)
    cache_dir: str = ".edgepack-cache"
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> "CompressSettings":
        if self.recipe and self.stages:
            raise ValueError("give either 'recipe' (a preset name) or 'stages', not both")
        return self


class Recipe(Strict):
    """A preset recipe file (recipes/<name>.toml)."""

    name: str
    description: str = ""
    stages: tuple[dict[str, Any], ...] = ()
    max_total_drop_pt: float = Field(default=1.0, ge=0)


# Parity budgets are per precision: what a float artifact must reproduce is far tighter
# than what int8 can. The floors below sit well under what the samples measured
# (docs/budgets.md has the figures) and well above what a broken conversion gives.
DEFAULT_MIN_AGREEMENT_PCT: dict[str, float] = {"fp32": 99.0, "fp16": 99.0, "int8": 98.0, "int8-dynamic": 98.0}
DEFAULT_MIN_SNR_DB: dict[str, float] = {"fp32": 60.0, "fp16": 30.0, "int8": 20.0, "int8-dynamic": 20.0}
# Cosine similarity of every artifact embedding to the fp32 model's (the lowest sample's).
DEFAULT_MIN_COSINE: dict[str, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98, "int8-dynamic": 0.98}


def _per_precision(value: Any) -> Any:
    """A number stands for every precision; a table names some of them."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {p: value for p in PRECISIONS}
    return value


def _percent(table: dict[str, float]) -> dict[str, float]:
    for precision, v in table.items():
        if not 0 <= v <= 100:
            raise ValueError(f"{precision}: {v:g} is not a percentage (0 to 100)")
    return table


def _cosine(table: dict[str, float]) -> dict[str, float]:
    for precision, v in table.items():
        if not -1 <= v <= 1:
            raise ValueError(f"{precision}: {v:g} is not a cosine similarity (-1 to 1)")
    return table


# {precision: value}, written in TOML as one number (every precision) or a table
# (`{ int8 = 97.0, fp32 = 99.5 }`); keys must be precisions.
PerPrecision = Annotated[dict[Precision, float], BeforeValidator(_per_precision)]
PerPrecisionPercent = Annotated[dict[Precision, float], BeforeValidator(_per_precision), AfterValidator(_percent)]
PerPrecisionCosine = Annotated[dict[Precision, float], BeforeValidator(_per_precision), AfterValidator(_cosine)]


class OutputBudget(Strict):
    """Tolerances for one named output of the model (`[budgets.outputs.<name>]`), against
    the fp32 model's same output: elementwise |out - ref| <= atol + rtol * |ref| for at
    least `min_within_pct` of the elements, and/or an SNR floor (a number, or a table per
    precision)."""

    atol: float | None = Field(default=None, ge=0)
    rtol: float | None = Field(default=None, ge=0)
    min_within_pct: float = Field(default=100.0, ge=0, le=100)
    min_snr_db: PerPrecision | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> "OutputBudget":
        if self.atol is None and self.rtol is None and self.min_snr_db is None:
            raise ValueError("give atol and/or rtol, or min_snr_db")
        return self


class _MetricBudget(Strict):
    """The gate on a declared metric (a task's own, or one the data.metric hook returns):
    each artifact's value may be at most `max_metric_drop` worse than the original
    model's, in the metric's own units, worse meaning lower for "higher" metrics."""

    gated_metric: str | None = None
    metric_direction: Literal["higher", "lower"] | None = None
    max_metric_drop: float | None = Field(default=None, ge=0)
    outputs: dict[str, OutputBudget] = {}

    @model_validator(mode="after")
    def _metric_complete(self) -> "_MetricBudget":
        if self.gated_metric is None and (self.metric_direction is not None or self.max_metric_drop is not None):
            raise ValueError("metric_direction and max_metric_drop need gated_metric (the metric they gate)")
        if self.gated_metric is not None and self.max_metric_drop is None:
            raise ValueError(f"gated_metric {self.gated_metric!r} needs max_metric_drop (how much worse than the original it may be)")
        return self


class BudgetOverrides(_MetricBudget):
    """A project's own budgets; each given field replaces the target's. For the
    per-precision budgets, a number replaces every precision's value and a table only the
    precisions it names."""

    max_accuracy_drop_pt: float | None = Field(default=None, ge=0)
    min_agreement_pct: PerPrecisionPercent | None = None
    min_snr_db: PerPrecision | None = None
    min_cosine: PerPrecisionCosine | None = None
    max_size_bytes: int | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)

    def given(self) -> list[str]:
        """The budgets this project sets itself, in the order of the fields."""
        return [name for name in type(self).model_fields if name in self.model_fields_set
                and getattr(self, name) not in (None, {})]

    def apply_to(self, budgets: "Budgets") -> "Budgets":
        given = {name: getattr(self, name) for name in self.given()}
        for name in ("min_agreement_pct", "min_snr_db", "min_cosine"):
            if name in given:
                given[name] = {**getattr(budgets, name), **given[name]}
        return budgets.model_copy(update=given) if given else budgets


class Project(Strict):
    project: ProjectInfo
    model: ModelSource
    data: DataHooks
    build: BuildSettings = BuildSettings()
    compress: CompressSettings = CompressSettings()
    budgets: BudgetOverrides = BudgetOverrides()


# --------------------------------------------------------------------------- target


class ArtifactSpec(Strict):
    format: FormatName
    precision: Precision = "int8"
    # What runs the artifact's ops: "xnnpack" (the XNNPACK CPU delegate) or "none" (the
    # runtime's own kernels); the valid values and the default are the format's
    # (Format.delegates). Absent: the format's default.
    delegate: str = ""
    dynamic: bool = True   # apply the declared dynamic_dims to this artifact

    @model_validator(mode="before")
    @classmethod
    def _format_default_delegate(cls, data: Any) -> Any:
        from edgepack.errors import ConfigError
        from edgepack.formats import get_format

        if isinstance(data, dict) and "delegate" not in data and isinstance(data.get("format"), str):
            try:
                data = {**data, "delegate": get_format(data["format"]).delegates[0]}
            except ConfigError:
                pass   # the format field reports it
        return data

    @model_validator(mode="after")
    def _delegate_of_the_format(self) -> "ArtifactSpec":
        from edgepack.formats import get_format

        valid = get_format(self.format).delegates
        if self.delegate not in valid:
            raise ValueError(f"delegate {self.delegate!r} is not available for {self.format}; valid: {', '.join(valid)}")
        return self


class Budgets(_MetricBudget):
    """What every artifact of a target must meet. Accuracy drop is against the original
    model on the labelled evaluation split; agreement, SNR and cosine similarity against
    the outputs of the fp32 model the artifact was exported from (the conversion's own
    fidelity), per the artifact's precision; precisions a target's table leaves out keep
    the defaults. Which of them apply depends on the project's task
    (edgepack/verify/tasks.py)."""

    max_accuracy_drop_pt: float = Field(default=1.0, ge=0)
    min_agreement_pct: PerPrecisionPercent = DEFAULT_MIN_AGREEMENT_PCT
    min_snr_db: PerPrecision = DEFAULT_MIN_SNR_DB
    min_cosine: PerPrecisionCosine = DEFAULT_MIN_COSINE
    max_size_bytes: int | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)

    @field_validator("min_agreement_pct", "min_snr_db", "min_cosine")
    @classmethod
    def _defaults_for_the_rest(cls, v: dict[str, float], info) -> dict[str, float]:
        defaults = {"min_agreement_pct": DEFAULT_MIN_AGREEMENT_PCT, "min_snr_db": DEFAULT_MIN_SNR_DB,
                    "min_cosine": DEFAULT_MIN_COSINE}[info.field_name]
        return {p: v.get(p, defaults[p]) for p in PRECISIONS}


class Target(Strict):
    name: Name             # the dist folder's name (edgepack.names)
    description: str = ""
    device: str
    artifacts: tuple[ArtifactSpec, ...] = Field(min_length=1)
    budgets: Budgets = Budgets()
    # Replaces the project's model.dynamic_dims for this target when given.
    dynamic_dims: tuple[DynamicDim, ...] | None = None

    @model_validator(mode="after")
    def _unique(self) -> "Target":
        seen = set()
        for a in self.artifacts:
            key = (a.format, a.precision)
            if key in seen:
                raise ValueError(f"artifact {a.format}/{a.precision} is listed twice")
            seen.add(key)
        return self


# --------------------------------------------------------------------------- device profile

ArmFeature = Literal["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"]


class CoreCluster(Strict):
    core: str
    count: int = Field(gt=0)
    max_clock_ghz: float = Field(gt=0)
    # Effective instructions per cycle of this core on NN inference kernels (XNNPACK, one
    # thread): what devices/estimate.py turns instruction counts into time with. It must
    # say where it comes from (a published latency and the count it was divided into).
    nn_ipc: float | None = Field(default=None, gt=0, le=8)
    nn_ipc_basis: str = ""
    # The same for static int8 kernels, where a published int8 latency exists: int8 and
    # fp32 kernels retire instructions at very different rates on the same core.
    nn_ipc_int8: float | None = Field(default=None, gt=0, le=8)
    nn_ipc_int8_basis: str = ""
    # Per-thread scaling when a runtime runs on this cluster's `count` cores (fitted with
    # nn_ipc, edgepack/devices/fit.py); None: estimate.PARALLEL_EFFICIENCY.
    nn_parallel_efficiency: float | None = Field(default=None, gt=0, le=1)
    # Its growth with a model's instructions per inference (fit.scaling): efficiency *
    # (instructions / 1e8) ** slope, at most 1. Larger models scale better.
    nn_parallel_efficiency_slope: float = Field(default=0.0, ge=-1, le=1)

    @model_validator(mode="after")
    def _ipc_has_basis(self) -> "CoreCluster":
        for value, basis, name in ((self.nn_ipc, self.nn_ipc_basis, "nn_ipc"),
                                   (self.nn_ipc_int8, self.nn_ipc_int8_basis, "nn_ipc_int8")):
            if value is not None and not basis.strip():
                raise ValueError(f"cluster {self.core!r}: {name} needs {name}_basis (the published figure it was derived from)")
        if self.nn_ipc_int8 is not None and self.nn_ipc is None:
            raise ValueError(f"cluster {self.core!r}: nn_ipc_int8 is given without nn_ipc")
        return self


class Reach(Strict):
    """How to reach a real unit of this device. Empty: none is configured."""

    ssh_host: str = ""
    ssh_port: int = 22
    ssh_user: str = ""
    ssh_python: str = "python3"
    adb_serial: str = ""


class DeviceProfile(Strict):
    name: str
    description: str = ""
    kind: Literal["phone", "board", "server"]
    isa: Literal["armv8-a", "armv8.2-a", "armv9-a"]
    features: tuple[ArmFeature, ...]
    clusters: tuple[CoreCluster, ...] = Field(min_length=1)
    memory_gb: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    qemu_cpu: str
    reach: Reach = Reach()
    sources: tuple[str, ...] = ()

    @field_validator("qemu_cpu")
    @classmethod
    def _not_max(cls, v: str) -> str:
        # qemu's "max" model enables SME paths that computed wrong int8 results in LiteRT.
        if v == "max":
            raise ValueError("'max' is not allowed (its SME paths give wrong int8 results); name a real core such as cortex-a72")
        return v

    @property
    def total_cores(self) -> int:
        return sum(c.count for c in self.clusters)
