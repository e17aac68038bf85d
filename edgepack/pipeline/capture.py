"""Step `capture`: the source model's graph, captured once for every format the plan
lists, before compression, calibration or verification spend any time on it.

All three exporters start from `torch.export`; a model it cannot capture (data-dependent
control flow, an unsupported Python construct, an op with no meta kernel) fails every
format, and used to do so per artifact, each after its own compression and calibration
work. Here it fails in seconds, with one line for the whole build. ONNX then translates
that same program to ONNX, which fails on aten ops its translator lacks: a format that
fails only here is recorded as failed for every target that lists it, and the others
are built (the target is incomplete, exit 3).

LiteRT's and ExecuTorch's own lowering are not tried here: they are the slow part of
their export (a LiteRT conversion of a MobileNet takes minutes), so their failures still
come from the export step. One of them is known from the captured graph alone: a
recurrent layer (LSTM, GRU, RNN) has no int8 kernels in litert-torch's lowering, so a
full-integer .tflite (`strict_int8`, the default) of such a model is refused here, in
seconds, rather than after its calibration and conversion."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

from edgepack.errors import ToolchainError

HINT = ("; every format exports through torch.export: make forward() capturable (no Python branching on "
        "tensor values, no TorchScript), or set model.program to a program saved with torch.export.save")


def formats_of(plan) -> list[str]:
    """The formats the plan's targets list, in first-listed order."""
    seen: list[str] = []
    for tp in plan.targets:
        for spec in tp.target.artifacts:
            if spec.format not in seen:
                seen.append(spec.format)
    return seen


# aten ops of torch's recurrent layers, as torch.export captures nn.LSTM, nn.GRU and nn.RNN
RECURRENT_OPS = {"aten.lstm.input": "LSTM", "aten.gru.input": "GRU", "aten.rnn_tanh.input": "RNN",
                 "aten.rnn_relu.input": "RNN"}


def capture(plan, loaded, say) -> tuple[dict, float]:
    """{format, or (format, precision): the error that stops it} for what cannot be
    built from the captured graph, and the seconds taken. Raises when the model cannot
    be captured at all. A Keras or ONNX source is not captured: its formats are written
    by its own framework's converters."""
    if plan.project.model.kind != "pytorch":
        return {}, 0.0
    import torch

    from edgepack._quiet import quiet_torch_loggers
    from edgepack.exporters import first_line, positional_outputs
    from edgepack.modelio import example_inputs

    formats = formats_of(plan)
    if not formats:
        return {}, 0.0
    quiet_torch_loggers()   # here, not only before a capture: the exporters log through them too
    started = time.perf_counter()
    project = plan.project
    marker = _marker(plan, loaded, translate_onnx="onnx" in formats)
    if plan.reuse_exports and marker is not None and marker.is_file():
        say(f"capturing the model's graph for {', '.join(formats)}: captured before, unchanged ({marker.parent})")
        return {}, time.perf_counter() - started
    say(f"capturing the model's graph for {', '.join(formats)}")
    names = tuple(s.name for s in project.model.input_specs)
    module = positional_outputs(loaded.source.module, names, project.model.output_names)
    example = tuple(torch.from_numpy(a) for a in example_inputs(project.model.input_specs))
    try:
        # A failed capture prints the traced graph's code on stderr, a page a user cannot act on.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.export(module, example, strict=False)
    except Exception as e:  # noqa: BLE001 - any capture failure is the model's, reported as one line
        raise ToolchainError(f"torch.export could not capture the model: {type(e).__name__}: {first_line(e)}{HINT}",
                             stage="capture") from e
    failures: dict = {}
    refused = _strict_int8_tflite_refusal(plan, program)
    if refused is not None:
        failures[("tflite", "int8")] = refused
    if "onnx" in formats:
        from edgepack.exporters.onnx import _quiet as quiet_export

        with tempfile.TemporaryDirectory(prefix="edgepack-capture-") as tmp:
            try:
                with quiet_export():
                    torch.onnx.export(program, (), str(Path(tmp) / "capture.onnx"), dynamo=True, optimize=False,
                                      external_data=False, verbose=False)
            except Exception as e:  # noqa: BLE001 - the translator's failure stops ONNX only
                root = _innermost(e)   # the exporter's own message is a page of next steps; its cause names the op
                failures["onnx"] = ToolchainError(f"onnx: translating the captured graph failed: {type(root).__name__}: "
                                                  f"{first_line(root)}", format="onnx", stage="capture")
    for what, e in failures.items():
        say(f"{what if isinstance(what, str) else ' '.join(what)} cannot be built: {e}")
    if not failures and marker is not None:
        _remember(marker)
    return failures, time.perf_counter() - started


def _asks_strict_int8_tflite(plan) -> bool:
    quantize = plan.recipe.quantize
    wanted = any(spec.format == "tflite" and spec.precision == "int8" for tp in plan.targets for spec in tp.target.artifacts)
    return wanted and quantize is not None and quantize.strict_int8 and not quantize.keep_float


def _strict_int8_tflite_refusal(plan, program) -> ToolchainError | None:
    """Why a full-integer .tflite of this graph cannot be built, when the plan asks for one
    and the graph holds a recurrent layer; None otherwise."""
    if not _asks_strict_int8_tflite(plan):
        return None
    layers = sorted({RECURRENT_OPS[str(n.target)] for n in program.graph.nodes
                     if n.op == "call_function" and str(n.target) in RECURRENT_OPS})
    if not layers:
        return None
    return ToolchainError(f"tflite int8: the model has {' and '.join(layers)} layers, which LiteRT's int8 lowering "
                          "(litert-torch) keeps in float, so the .tflite cannot be full-integer; set strict_int8 = false "
                          "in the quantize stage to build it with those layers in float, or build tflite at fp32/fp16",
                          format="tflite", stage="capture")


def _marker(plan, loaded, *, translate_onnx: bool) -> Path | None:
    """The file that records a successful capture of this model with this toolchain
    (a second build of an unchanged model skips the step), or None when the model's
    state cannot be hashed. Failures are never recorded: they are tried again."""
    from edgepack.compress import cachekey
    from edgepack.pipeline.export_cache import _edgepack_code, _model_digest
    from edgepack.release.toolchain import toolchain_versions

    try:
        model_digest = _model_digest(loaded.source.module)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return None
    project = plan.project
    doc = {"schema": "edgepack.capture-cache/1",
           "source": cachekey.source_key(loaded.source.sha256, project_dir=plan.project_dir, factory=project.model.factory),
           "model": model_digest, "translate_onnx": translate_onnx,
           "strict_int8_tflite": _asks_strict_int8_tflite(plan),
           "input": [[s.name, list(s.shape), s.dtype] for s in project.model.input_specs],
           "output": list(project.model.output_names), "tools": toolchain_versions(), "edgepack_code": _edgepack_code()}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    return plan.project_dir / project.compress.cache_dir / "captures" / key[:40]


def _remember(marker: Path) -> None:
    try:   # a cache that cannot be written costs a capture next time, nothing else
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("captured\n")
    except OSError:
        pass


def _innermost(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e
