"""`manifest.json` as one typed model: every writer builds or validates a `Manifest`
before writing, every reader validates through it, and the published JSON Schema
(schema/manifest.schema.json) is generated from it.

Regenerate the schema after changing a model here:

    python -m edgepack.release.manifest_model > edgepack/release/schema/manifest.schema.json

(a test fails while the committed file and the model disagree).

What gets written: a field is written when it was given, whether read from a document
or passed to a constructor, so a manifest read and written again keeps its exact keys
(a reproducible release leaves clock figures out; reading it back must not bring them
back as nulls). A builder passes every field it means to write, `[]` and None
included; only the fields a class lists in `_always` (a row's `method`, the `schema`)
are written with their default when not given. Numbers keep their JSON type: an
integer stays an integer in a float field, so a re-written manifest's bytes do not
change.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, PlainValidator, StrictBool,
                      StrictInt, StrictStr, Tag, TypeAdapter, WithJsonSchema, model_validator)

from edgepack.names import StrictName, StrictVersion, release_root

__all__ = ["MANIFEST_SCHEMA", "Manifest", "Artifact", "Measurement", "DeviceRun", "Measured", "Emulated", "Estimated",
           "EstimateDetail", "MEASUREMENT", "json_schema", "schema_text"]

MANIFEST_SCHEMA = "edgepack.manifest/1"
SCHEMA_ID = "https://edgepack.dev/schema/manifest-1.json"


# --------------------------------------------------------------------------- value types


def _number(*, ge: float | None = None, le: float | None = None):
    """A JSON number (int or float, kept as given; never a bool or a string) in [ge, le]."""
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("expected a number")
        if ge is not None and v < ge:
            raise ValueError(f"must be >= {ge:g}")
        if le is not None and v > le:
            raise ValueError(f"must be <= {le:g}")
        return v

    schema: dict[str, Any] = {"type": "number"}
    if ge is not None:
        schema["minimum"] = ge
    if le is not None:
        schema["maximum"] = le
    return Annotated[float, PlainValidator(check), PlainSerializer(lambda v: v, return_type=Any),
                     WithJsonSchema(schema)]


Number = _number()
NonNegative = _number(ge=0)
Fraction = _number(ge=0, le=1)          # accuracies, agreement, shares
Percent = _number(ge=0, le=100)
Count = Annotated[StrictInt, Field(ge=0)]
Task = Literal["classification", "regression", "embedding", "none"]
# Named scores of a model: the task's own (accuracy, top5_accuracy, mae, rmse,
# cosine_mean, cosine_min) and those the project's metric hook returned.
Scores = dict[StrictStr, Number]
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
# Relative paths inside a dist or release folder: no leading /, no `..` part, no backslash.
RelPath = Annotated[StrictStr, Field(pattern=r"^(?!/)(?!.*(^|/)\.\.(/|$))[^\\]+$")]
# An artifact's file name: a plain name in the dist folder, never a path.
FileName = Annotated[StrictStr, Field(pattern=r"^(?!\.\.?$)[^/\\]+$")]
Precision = Literal["fp32", "fp16", "int8", "int8-dynamic"]


class Record(BaseModel):
    """Base of every manifest section: unknown keys are errors, and a section writes the
    fields it was given (see the module docstring)."""

    # python-re: the path patterns need look-ahead, which the default engine lacks.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, regex_engine="python-re")
    _always: ClassVar[frozenset[str]] = frozenset()

    def model_post_init(self, context: Any) -> None:
        if self._always:
            self.__pydantic_fields_set__.update(self._always)

    def to_json(self) -> dict:
        """The JSON document of this section (what manifest.json holds)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --------------------------------------------------------------------------- top-level sections


class ProjectSection(Record):
    # Name, version and target make the release's folder and archive name (edgepack.names).
    name: StrictName
    version: StrictVersion
    description: StrictStr | None = None


class Git(Record):
    """The project folder's git state at build time."""

    commit: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{40,64}$")]
    dirty: StrictBool


class ModelInput(Record):
    """One declared input of the model, in the order every artifact takes them."""

    name: StrictStr
    shape: list[Annotated[StrictInt, Field(ge=1)]]
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"]
    dynamic_dims: list[DimRange] = []


class ModelOutput(Record):
    """One declared output of the model, in the order every artifact returns them."""

    name: StrictStr
    shape: list[Count]
    dtype: StrictStr


class Source(Record):
    """The source model. `input_shape`, `input_name` and `output_name` are its first input
    and output; `inputs` and `outputs` list all of them in declared order."""

    sha256: Sha256
    kind: Literal["pytorch", "keras", "onnx", "saved_model"] | None = None   # config.schema.ModelSource.kind; None before it was recorded
    file: StrictStr
    parameters: Count
    fp32_weight_bytes: Count
    input_shape: list[Annotated[StrictInt, Field(ge=1)]]
    input_name: StrictStr
    output_name: StrictStr
    inputs: list[ModelInput] | None = None
    outputs: list[ModelOutput] | None = None
    activation_elements: Count | None = None


class InputData(Record):
    """One input's data in a split: the hash of its array, and its range."""

    name: StrictStr
    sha256: Sha256
    dtype: StrictStr
    shape: list[Count]
    min: Number
    max: Number


class EvaluationSection(Record):
    """The held-out data every artifact is scored on. The flat fields describe the first
    input; `inputs` every input, when the model has several."""

    split: StrictStr
    samples: Count
    task: Task | None = None                   # absent in manifests written before tasks: classification
    reference_accuracy: Fraction | None = None  # classification only
    compressed_accuracy: Fraction | None = None
    reference_metrics: Scores | None = None     # the original model's scores
    compressed_metrics: Scores | None = None    # the scores of the model the artifacts were exported from
    metric_hook: StrictStr | None = None        # data.metric, when the project scores with its own function
    sha256: Sha256 | None = None
    labels_sha256: Sha256 | None = None
    dtype: StrictStr | None = None
    shape: list[Count] | None = None
    min: Number | None = None
    max: Number | None = None
    inputs: list[InputData] | None = None


class CalibrationSection(Record):
    """The data int8 quantization was calibrated on (flat fields: the first input)."""

    samples: Count
    sha256: Sha256 | None = None
    dtype: StrictStr | None = None
    shape: list[Count] | None = None
    min: Number | None = None
    max: Number | None = None
    inputs: list[InputData] | None = None


class QuantizeOptions(Record):
    """The quantization options every exporter used (the recipe's quantize stage)."""

    weights: Literal["per_channel", "per_tensor"] | None = None
    activations: Literal["asymmetric", "symmetric"] | None = None
    keep_float: list[StrictStr] | Literal["auto"] | None = None
    max_float_layers: Annotated[StrictInt, Field(ge=1)] | None = None
    sensitivity: StrictBool | None = None
    calibration_samples: Annotated[StrictInt, Field(ge=1)] | None = None
    calibration: Literal["minmax", "percentile", "entropy", "mse"] | None = None
    percentile: Number | None = None
    equalize: StrictBool | None = None
    bias_correction: StrictBool | None = None
    strict_int8: StrictBool | None = None
    tune_ranges: StrictBool | None = None


class RecipeStage(Record):
    stage: Annotated[StrictInt, Field(ge=1)] | None = None
    pass_name: StrictStr = Field(alias="pass")
    name: StrictStr | None = None
    max_drop_pt: NonNegative | None = None
    # Open: each pass defines its own typed config (edgepack.passes); passes are looked
    # up by name, so the manifest records whatever that pass's config model dumped.
    config: dict[str, Any]


class RecipeSection(Record):
    name: StrictStr
    source: StrictStr | None = None
    max_total_drop_pt: NonNegative | None = None
    stages: list[RecipeStage]
    quantize: QuantizeOptions


class StageEntry(Record):
    """One row of the per-stage table; the first is the model as handed over."""

    stage: Count | None = None
    name: StrictStr
    kind: StrictStr
    pass_name: StrictStr | None = Field(default=None, alias="pass")
    sha256: Sha256 | None = None
    key: StrictStr | None = None
    parameters: Count | None = None
    nonzero_parameters: Count | None = None
    macs: Count | None = None
    size_bytes: Count | None = None
    fp32_bytes: Count | None = None
    zipped_bytes: Count | None = None
    accuracy: Fraction | None = None
    precision_macro: Fraction | None = None
    recall_macro: Fraction | None = None
    f1_macro: Fraction | None = None
    metrics: Scores | None = None             # the task's and the metric hook's scores of this stage's model
    drop_pt: Number | None = None
    total_drop_pt: Number | None = None
    seconds: NonNegative | None = None
    cache: Literal["-", "hit", "miss", "off"] | None = None
    notes: list[StrictStr] | None = None    # what did not go the usual way (an unreadable cache entry, ...)
    # Open: what each pass measured (sparsity, clusters, teachers' accuracy...) is the
    # pass's own report, and passes are registered by name.
    report: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


class AgreementFloors(Record):
    """Per precision, the top-1 agreement (%) an artifact must keep with its fp32 model."""

    fp32: Percent | None = None
    fp16: Percent | None = None
    int8: Percent | None = None
    int8_dynamic: Percent | None = Field(default=None, alias="int8-dynamic")


class SnrFloors(Record):
    """Per precision, the logit SNR (dB) an artifact must keep against its fp32 model."""

    fp32: Number | None = None
    fp16: Number | None = None
    int8: Number | None = None
    int8_dynamic: Number | None = Field(default=None, alias="int8-dynamic")


class CosineFloors(Record):
    """Per precision, the cosine similarity an embedding must keep with its fp32 model's."""

    fp32: Number | None = None
    fp16: Number | None = None
    int8: Number | None = None
    int8_dynamic: Number | None = Field(default=None, alias="int8-dynamic")


class OutputBudgetSection(Record):
    """Tolerances of one named output against the fp32 model's."""

    atol: NonNegative | None = None
    rtol: NonNegative | None = None
    min_within_pct: Percent | None = None
    min_snr_db: SnrFloors | None = None


class BudgetsSection(Record):
    max_accuracy_drop_pt: NonNegative
    # Absent in manifests of builds made before these gates.
    min_agreement_pct: AgreementFloors | None = None
    min_snr_db: SnrFloors | None = None
    min_cosine: CosineFloors | None = None
    gated_metric: StrictStr | None = None
    metric_direction: Literal["higher", "lower"] | None = None
    max_metric_drop: NonNegative | None = None
    outputs: dict[StrictStr, OutputBudgetSection] | None = None
    max_size_bytes: Annotated[StrictInt, Field(ge=1)] | None = None
    max_latency_ms: NonNegative | None = None


class Gates(Record):
    passed: StrictBool
    failures: list[StrictStr]
    latency: StrictStr | None = None
    # How max_latency_ms was treated: held against device estimates, waived by
    # --no-latency-gate, absent, or not judgeable (the build failed). Absent in
    # manifests written before it existed.
    latency_gate: Literal["gated", "waived", "no_budget", "unjudged"] | None = None


class GateCheck(Record):
    """One budget held against one artifact: `budget` names it as the target's [budgets]
    do (or `device_divergence`: a device run against the build host's outputs, limit =
    the release tolerance); `value` is what the artifact measured (null for the SNR of
    bit-identical outputs), `limit` what the budget allows for its precision."""

    budget: StrictStr
    value: Number | None
    limit: Number
    passed: StrictBool
    device: StrictStr | None = None


class LatencyCalibration(Record):
    """The calibration file latency estimates were scaled by, recorded by hash."""

    file: StrictStr
    sha256: Sha256


# --------------------------------------------------------------------------- artifacts


class DimRange(Record):
    """An input dimension exported as dynamic, in [min, max]."""

    input: StrictStr | None = None      # the input it belongs to, when the model has several
    dim: Count
    name: StrictStr
    min: Annotated[StrictInt, Field(ge=1)]
    max: Annotated[StrictInt, Field(ge=1)]


class Fallback(Record):
    """A step that did not go the preferred way, and why (never silent)."""

    step: StrictStr
    taken: StrictStr
    reason: StrictStr


class LiteRTTensor(Record):
    """An input or output as LiteRT's interpreter reports it; scale and zero point only
    for quantized tensors."""

    name: StrictStr
    shape: list[StrictInt]
    dtype: StrictStr
    scale: Number | None = None
    zero_point: StrictInt | None = None


class Simplify(Record):
    """The ONNX graph simplification pass and what it did."""

    tool: StrictStr
    applied: StrictBool
    reason: StrictStr | None = None
    nodes_before: Count
    nodes_after: Count


class Calibration(Record):
    """How a static int8 artifact's activation ranges were chosen: the quantize stage's
    method and the backend code that applied it."""

    method: Literal["minmax", "percentile", "entropy", "mse"]
    implementation: StrictStr
    percentile: Number | None = None


class Equalization(Record):
    """Cross-layer equalization of the model the int8 artifact was exported from."""

    pairs: Count
    batchnorms_folded: Count
    relu6_replaced: Count
    relu6_kept: list[StrictStr]           # ReLU6 that clipped calibration inputs: their pairs are left alone
    sweeps: Count
    layers: list[list[StrictStr]]
    fp32_max_abs_change: NonNegative
    fp32_snr_db: Number | None = None     # null: the float outputs did not change at all


class BiasCorrection(Record):
    """Empirical bias correction of the model the int8 artifact was exported from."""

    layers: Count
    samples: Count
    mean_abs_shift: NonNegative
    max_abs_shift: NonNegative


class LayerSensitivity(Record):
    layer: StrictStr
    snr_db: Number | None = None          # null: that layer's int8 left the outputs bit-identical
    agreement: Fraction
    weights: Count
    macs: Count


class Sensitivity(Record):
    """The layers that lose most to int8, each quantized alone (compress.sensitivity),
    most sensitive first (the top ones of `layers_measured`)."""

    method: StrictStr
    samples: Count
    layers_measured: Count
    int8_snr_db: Number | None = None     # every layer int8 at once, on the same samples
    int8_agreement: Fraction
    seconds: NonNegative
    layers: list[LayerSensitivity]


class MixedPrecisionStep(Record):
    float_layers: list[StrictStr]
    agreement: Fraction
    snr_db: Number | None = None
    float_weights: Count
    extra_bytes: Count                    # 3 bytes per weight kept in fp32 instead of int8
    float_macs_pct: Percent


class MixedPrecisionBudget(Record):
    min_agreement_pct: Percent
    min_snr_db: Number


class MixedPrecision(Record):
    """keep_float = "auto": the layers kept in float and every step of the search
    (compress.mixed_precision), predicted on the fake-quantized torch model."""

    keep_float: list[StrictStr]
    met: StrictBool
    budget: MixedPrecisionBudget
    max_float_layers: Annotated[StrictInt, Field(ge=1)]
    samples: Count
    seconds: NonNegative
    steps: list[MixedPrecisionStep]


class TunedRange(Record):
    tensor: StrictStr                     # its node in the fake-quantized torch graph
    factor: NonNegative                   # the calibrated range was scaled by this
    alone_snr_db: Number | None = None    # output SNR with only this activation (and the weights) int8


class RangeTuning(Record):
    """tune_ranges = true: the activation ranges rescaled for the outputs' sake
    (compress.range_tuning), on calibration inputs; and how many of them this artifact's
    own calibration matched (exporters._tuned_ranges)."""

    method: StrictStr | None = None
    activations: Count | None = None
    searched: Count | None = None
    samples: Count | None = None
    snr_before_db: Number | None = None
    snr_after_db: Number | None = None
    seconds: NonNegative | None = None
    tuned: list[TunedRange] | None = None
    tuned_tensors: Count | None = None     # this artifact: tuned ranges handed to its calibration
    observers_matched: Count | None = None  # PT2E observers (LiteRT, ExecuTorch) that matched one
    tensors_matched: Count | None = None    # onnxruntime tensors that matched one


class Export(Record):
    """What the exporter reported. Common fields first, then each built-in format's own.

    Open for further keys: a format added through the format registry reports its own
    facts here, and the manifest cannot know their names in advance. The keys of the
    built-in formats are typed and checked."""

    model_config = ConfigDict(extra="allow")

    # every format
    dynamic_dims: list[DimRange] | None = None
    ops: dict[str, Count] | None = None
    weights: Literal["per_channel", "per_tensor"] | None = None
    keep_float: list[StrictStr] | None = None
    precision: Precision | None = None
    fallbacks: list[Fallback] | None = None
    calibration: Calibration | None = None            # static int8
    equalization: Equalization | None = None          # int8 with the quantize stage's equalize
    bias_correction: BiasCorrection | None = None     # int8 with the quantize stage's bias_correction
    sensitivity: Sensitivity | None = None            # int8 with sensitivity = true or keep_float = "auto"
    mixed_precision: MixedPrecision | None = None     # int8 with keep_float = "auto"
    range_tuning: RangeTuning | None = None           # int8 with tune_ranges = true
    # tflite (LiteRT)
    tensors_by_dtype: dict[str, Count] | None = None
    float_ops: dict[str, Count] | None = None         # int8: ops computing in float (QUANTIZE/DEQUANTIZE aside)
    per_channel_int8_weights: Count | None = None
    inputs: list[LiteRTTensor] | None = None
    outputs: list[LiteRTTensor] | None = None
    # executorch
    backend: StrictStr | None = None
    delegated_subgraphs: Count | None = None
    delegated_nodes: Count | None = None
    non_delegated_ops: dict[str, Count] | None = None
    int8_delegate_tensors: Count | None = None
    # onnx
    opset: StrictInt | None = None
    nodes: Count | None = None
    nodes_exported: Count | None = None
    initializers_by_dtype: dict[str, Count] | None = None
    float_nodes: list[StrictStr] | None = None
    simplify: Simplify | None = None


class Quantization(Record):
    """Affine parameters of an int8 tensor: real = scale * (q - zero_point)."""

    scale: Number
    zero_point: StrictInt


class Tensor(Record):
    name: StrictStr                             # the declared name; inputs and outputs in declared order
    shape: list[Union[StrictInt, StrictStr]]    # a string names a dynamic dimension
    dtype: StrictStr
    quantization: Quantization | None
    runtime_name: StrictStr | None = None       # what the runtime calls it, where that differs (ExecuTorch: input_0)


class Signature(Record):
    """What the artifact's runtime sees at its boundary."""

    inputs: list[Tensor]
    outputs: list[Tensor]


class DynamicCheck(Record):
    """One run of a dynamic artifact at one size, against the fp32 model."""

    input: StrictStr | None = None      # the input whose dim this is, when the model has several
    dim: Count
    name: StrictStr
    size: Annotated[StrictInt, Field(ge=1)]
    input_shape: list[Count]
    max_abs_error: NonNegative
    agreement: Fraction


class OutputParityEntry(Record):
    """One named output of an artifact against the same output of the fp32 model; the
    share within tolerance where the target declares one for it."""

    max_abs_error: NonNegative
    snr_db: Number | None                 # null: bit-identical
    atol: NonNegative | None = None
    rtol: NonNegative | None = None
    within_tolerance: Fraction | None = None


class HostLatency(Record):
    """The build's host measurement (`latency_ms`). The timings are absent in a release
    packaged with --reproducible, and `omitted` says so."""

    runner: StrictStr
    timing: StrictStr | None = None
    machine: StrictStr
    runtime: StrictStr
    threads: Annotated[StrictInt, Field(ge=1)]
    iterations: Annotated[StrictInt, Field(ge=1)]
    import_ms: NonNegative | None = None
    load_ms: NonNegative | None = None
    first_inference_ms: NonNegative | None = None
    p50: NonNegative | None = None
    p90: NonNegative | None = None
    p99: NonNegative | None = None
    mean: NonNegative | None = None
    std: NonNegative | None = None
    peak_rss_mb: NonNegative | None = None
    omitted: StrictStr | None = None


class RunParity(Record):
    """A device run's outputs against the fp32 model and against the build host's run."""

    samples: Count | None = None
    accuracy: Fraction | None = None
    agreement: Fraction | None = None
    max_abs_error: NonNegative | None = None
    snr_db: Number | None = None
    max_abs_diff_vs_build_host: NonNegative | None = None


class InstructionWindow(Record):
    """Guest instructions counted between the markers around the timed loop."""

    instructions: Count
    simd_fp: Count
    dotprod: Count
    mmla: Count


class InstructionCount(Record):
    cpu: StrictStr
    method: StrictStr
    iterations: Annotated[StrictInt, Field(ge=1)]
    exact: StrictBool
    window: InstructionWindow
    per_inference: NonNegative
    simd_fp_share: Fraction
    dotprod_per_inference: NonNegative
    mmla_per_inference: NonNegative


class OpTime(Record):
    """One operator type's share of an inference (profile --ops)."""

    op: StrictStr
    ms_per_inference: NonNegative
    nodes: Count
    share: Fraction


# A list of operator rows, or a sentence saying why the runtime did not give them.
OpTimes = Union[list[OpTime], StrictStr]


class DeviceRun(Record):
    """What every run of an artifact on a device records, measured or emulated."""

    _always = frozenset({"method"})

    device: StrictStr
    runner: StrictStr
    timing: StrictStr | None = None
    machine: StrictStr | None = None
    runtime: StrictStr | None = None
    threads: Annotated[StrictInt, Field(ge=1)] | None = None
    iterations: Annotated[StrictInt, Field(ge=1)] | None = None
    import_ms: NonNegative | None = None
    load_ms: NonNegative | None = None
    first_inference_ms: NonNegative | None = None
    peak_rss_mb: NonNegative | None = None
    instructions: InstructionCount | None = None
    ops: OpTimes | None = None


class Measured(DeviceRun):
    """A wall-clock run on a real machine: the host, a board over ssh, a phone over adb.
    The timings are absent in a release packaged with --reproducible."""

    method: Literal["measured"] = "measured"
    tool: StrictStr | None = None                 # adb: the runtime's benchmark binary
    p50: NonNegative | None = None
    p90: NonNegative | None = None
    p99: NonNegative | None = None
    mean: NonNegative | None = None
    std: NonNegative | None = None
    min: NonNegative | None = None
    max: NonNegative | None = None
    p50_ms: NonNegative | None = None
    p90_ms: NonNegative | None = None
    # adb's benchmark tools print timings only: a sentence says parity was not checked.
    parity: Union[RunParity, StrictStr, None] = None
    calibrated: StrictStr | None = None           # the calibration file this run wrote


class Emulated(DeviceRun):
    """A run on the device's CPU model under qemu-user: exact instruction counts and
    parity on aarch64. Emulated wall time is not latency: p50_ms and p90_ms are null
    (given explicitly by the build; a reproducible release leaves them out)."""

    method: Literal["emulated"] = "emulated"
    cpu: StrictStr
    p50_ms: None = None
    p90_ms: None = None
    emulated_wall_p50_ms: NonNegative | None = None
    parity: RunParity | None = None


class ExpectedError(Record):
    """The error an estimate can expect: the leave-one-model-out error of its rate on
    published rows of the same core, precision and thread count (devices/fit.py)."""

    validated: StrictBool
    held_out_rows: Count | None = None
    median_abs_error: NonNegative | None = None
    within_25pct: Fraction | None = None
    text: StrictStr


class EstimateDetail(Record):
    """An estimated latency with its method and every input (devices.estimate)."""

    device: StrictStr
    estimate_ms: NonNegative
    compute_ms: NonNegative
    memory_ms: NonNegative
    bound: Literal["compute", "memory"]
    core: StrictStr
    clock_ghz: NonNegative
    nn_ipc: NonNegative
    precision: StrictStr
    threads: Annotated[StrictInt, Field(ge=1)]
    instructions_per_inference: NonNegative
    counted_on: StrictStr
    bytes_moved: Count
    memory_bandwidth_gbs: NonNegative
    calibration_factor: NonNegative
    calibration_source: StrictStr
    ipc_basis: StrictStr
    expected_error: ExpectedError | None = None   # absent in manifests written before it existed
    kind: Literal["estimate"]
    method: StrictStr
    notes: list[StrictStr]


class Estimated(Record):
    """A latency estimate for the device from counted instructions and bytes moved.
    Never a measurement; p90_ms is null (an estimate has no spread)."""

    _always = frozenset({"method", "p90_ms"})

    device: StrictStr
    method: Literal["estimated"] = "estimated"
    runner: StrictStr
    threads: Annotated[StrictInt, Field(ge=1)]
    p50_ms: NonNegative
    p90_ms: None = None
    label: StrictStr
    estimate: EstimateDetail


Measurement = Annotated[
    Union[Annotated[Measured, Tag("measured")], Annotated[Emulated, Tag("emulated")],
          Annotated[Estimated, Tag("estimated")]],
    Discriminator("method"),
]
MEASUREMENT = TypeAdapter(Measurement)   # validates one row: MEASUREMENT.validate_python(row)


class DelegateUse(Record):
    """The delegate the target asked for and the one the build's verification ran on."""

    requested: StrictStr
    used: StrictStr
    detail: StrictStr     # how it is known: the file's delegated subgraphs, or what the runtime reported


class ArtifactTimings(Record):
    """Wall seconds this build spent on an artifact. Shared steps (one export serving
    several targets) show the same figures in each target's manifest."""

    export: NonNegative
    export_reused: StrictBool = False     # copied from an identical earlier export
    verify: NonNegative
    emulate: NonNegative | None = None    # only under --runner qemu


class BuildTimings(Record):
    """Wall seconds of the steps every target of a build shares."""

    load: NonNegative
    capture: NonNegative | None = None    # the graph captured for every format (absent before that step existed)
    compress: NonNegative
    # The quantize stage's rewrites and searches (equalization, bias correction, keep_float
    # "auto", range tuning), made once for every int8 artifact; absent when none was built.
    int8_choices: NonNegative | None = None


class Artifact(Record):
    """One emitted file, what it scored, how fast it ran, and what its runtime sees."""

    format: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    precision: Precision
    file: FileName
    sha256: Sha256
    reproducible_across: StrictStr | None = None   # which build machines give these same bytes
    size_bytes: Count
    size_vs_fp32_weights: NonNegative | None = None
    zipped_bytes: Count | None = None
    task: Task | None = None                 # absent in manifests written before tasks: classification
    accuracy: Fraction | None                # classification only (null for other tasks)
    reference_accuracy: Fraction | None = None
    accuracy_drop_pt: Number | None = None
    agreement: Fraction | None = None
    metrics: Scores | None = None            # the task's and the metric hook's scores of this artifact
    reference_metrics: Scores | None = None  # the same scores of the original model
    max_abs_error: NonNegative | None = None
    snr_db: Number | None = None
    outputs: dict[StrictStr, OutputParityEntry] | None = None   # parity per declared output, by name, in order
    dynamic_check: list[DynamicCheck] = []
    evaluated_samples: Count | None = None
    latency_ms: HostLatency
    export: Export | None = None
    delegate: DelegateUse | None = None      # absent in manifests written before delegates were honoured
    measurements: list[Measurement] = []
    warnings: list[StrictStr] = []
    signature: Signature | None = None
    timings_s: ArtifactTimings | None = None   # absent in a release packaged with --reproducible
    gates: list[GateCheck] | None = None     # every budget checked on this artifact, passed or not


# --------------------------------------------------------------------------- release parts


class Vector(Record):
    file: RelPath
    sha256: Sha256
    shape: list[Count]


class RecordedVector(Vector):
    atol: NonNegative     # how far a re-run may differ and still pass verify --run


class TestVectors(Record):
    __test__ = False      # not a pytest class, whatever its name

    samples: Count
    inputs: Vector
    reference: Vector
    outputs: dict[str, RecordedVector]


class PackageSignature(Record):
    algorithm: Literal["ed25519"]
    file: StrictStr
    public_key_sha256: Sha256


class ReleaseFile(Record):
    path: RelPath
    sha256: Sha256
    size_bytes: Count


class Package(Record):
    """Only in a release archive."""

    root: StrictStr
    source_date_epoch: Count
    signature: PackageSignature | None
    files: list[ReleaseFile]


class FailedArtifactEntry(Record):
    """An artifact the target lists that could not be built: its converter, quantizer or
    runtime failed. The target's dist is then set aside as incomplete."""

    format: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    precision: Precision
    file: FileName
    stage: StrictStr
    error: StrictStr


class SkippedArtifactEntry(Record):
    """An artifact the target lists that the project cannot reach (edgepack/unreachable.py),
    left out at plan time because the project sets `[build] skip_unreachable = true`."""

    format: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    precision: Precision
    reason: StrictStr


class Manifest(Record):
    """manifest.json of an edgepack build (dist/<target>/) or release archive. See
    docs/manifest.md for every field."""

    _always = frozenset({"schema_"})

    schema_: Literal["edgepack.manifest/1"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    project: ProjectSection
    target: StrictName
    device_profile: StrictStr
    source: Source
    evaluation: EvaluationSection
    recipe: RecipeSection | None = None
    stages: list[StageEntry] | None = None
    stages_evaluated_on: StrictStr | None = None
    calibration: CalibrationSection
    toolchain: dict[str, StrictStr]
    budgets: BudgetsSection
    gates: Gates
    artifacts: list[Artifact]
    failed_artifacts: list[FailedArtifactEntry] | None = None   # only in a dist set aside as incomplete
    skipped_artifacts: list[SkippedArtifactEntry] | None = None  # unreachable, left out by [build] skip_unreachable
    timings_s: BuildTimings | None = None     # absent in a release packaged with --reproducible
    git: Git | None = None
    test_vectors: TestVectors | None = None
    latency_calibration: LatencyCalibration | None = None
    package: Package | None = None

    @model_validator(mode="after")
    def _root_named_after_the_release(self) -> "Manifest":
        # The root is the folder a reader extracts and the archive's name: it must be the
        # one the project, target and version make, never a path of the writer's choosing.
        if self.package is not None:
            expected = release_root(self.project.name, self.target, self.project.version)
            if self.package.root != expected:
                raise ValueError(f"package.root is {self.package.root!r}; a release of {self.project.name} "
                                 f"{self.project.version} for {self.target} has root {expected!r}")
        return self


# --------------------------------------------------------------------------- JSON Schema


def _tidy(node, names: bool = False):
    """Pydantic's schema made readable and kept to plain draft 2020-12: no per-field
    titles or defaults, `["number", "null"]` instead of an anyOf for a nullable scalar,
    and no OpenAPI `discriminator` (oneOf on `method`'s const says the same). `names`:
    the keys of this node are property or definition names, not keywords."""
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {k: _tidy(v) for k, v in node.items()}
    out = {k: _tidy(v, names=k in ("properties", "$defs"))
           for k, v in node.items() if k not in ("title", "default", "discriminator")}
    branches = out.get("anyOf")
    if branches and all(set(b) == {"type"} and isinstance(b["type"], str) for b in branches):
        out.pop("anyOf")
        out["type"] = [b["type"] for b in branches]
    elif branches and len(branches) == 2 and {"type": "null"} in branches:
        other = next(b for b in branches if b != {"type": "null"})
        if isinstance(other.get("type"), str) and "$ref" not in other:
            out.pop("anyOf")
            out.update({**other, "type": [other["type"], "null"]})
            if "enum" in other:     # an enum lists every allowed value, null included
                out["enum"] = [*other["enum"], None]
    return out


def json_schema() -> dict:
    """The published JSON Schema of manifest.json, generated from `Manifest`."""
    schema = _tidy(Manifest.model_json_schema(by_alias=True, mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, "title": MANIFEST_SCHEMA,
            "description": " ".join(Manifest.__doc__.split()), **schema}


def schema_text() -> str:
    """The schema file's exact text (sorted keys, two-space indentation, final newline)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
