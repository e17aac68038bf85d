"""ONNX: `torch.onnx.export(dynamo=True)` to one self-contained file (or, from a Keras or
ONNX source, exporters.onnx_sources), then onnxruntime.quantization's static QDQ int8
(per-channel weights, calibrated activations)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgepack.errors import ToolchainError

# Loggers that print progress and "torchvision is not installed" lines during export.
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "root")
MAX_BATCH = 4096


@contextlib.contextmanager
def _quiet():
    loggers = [logging.getLogger(n if n != "root" else None) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def graphs(g):
    """`g` and every subgraph of its nodes' attributes (If, Loop, Scan bodies), depth first."""
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.HasField("g"):
                yield from graphs(a.g)
            for sub in a.graphs:
                yield from graphs(sub)


def _strip_debug_metadata(model) -> None:
    """The dynamo exporter tags every node with its Python stack trace (absolute paths of
    the build machine): 13-22% of a small model's bytes, and it makes the artifact depend
    on where it was built. Nothing at run time reads it."""
    for g in graphs(model.graph):
        for n in g.node:
            del n.metadata_props[:]
            n.doc_string = ""
        for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
            del v.metadata_props[:]
    for f in model.functions:
        for n in f.node:
            del n.metadata_props[:]


def nodes_of_modules(model, modules: tuple[str, ...]) -> list[str]:
    """Names of the nodes the exporter produced for the given torch modules, read from the
    name scopes it records on each node (needed before the metadata is stripped)."""
    wanted = set(modules)
    names = []
    for n in model.graph.node:
        scopes = next((p.value for p in n.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(f"'{m}'" in scopes for m in wanted):
            names.append(n.name)
    return names


def name_graph_io(graph, input_names, output_names) -> None:
    """Give the graph's inputs and outputs the declared names, in order. An inner value
    that already holds one of those names is renamed first (`<name>__inner`, made
    unique), so every value keeps a single definition."""
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    wanted = {old: new for old, new in [*zip(inputs, input_names), *zip([o.name for o in graph.output], output_names)]
              if old != new}
    if not wanted:
        return
    taken = _value_names(graph)
    renames = {}
    for new in wanted.values():
        if new in taken and new not in wanted:
            k, spare = 0, f"{new}__inner"
            while spare in taken:
                k, spare = k + 1, f"{new}__inner{k + 1}"
            renames[new] = spare
            taken.add(spare)
    renames.update(wanted)
    _rename_values(graph, renames)


def _value_names(graph) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                names |= _value_names(sub)
    return names - {""}


def _rename_values(graph, renames: dict[str, str]) -> None:
    """Rename values everywhere they are defined or read, subgraphs (If, Loop) included,
    since a subgraph may read an outer value by name."""
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attr in node.attribute:
            for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                _rename_values(sub, renames)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = renames.get(value.name, value.name)


def export_fp32(module, example: tuple, path: Path, *, input_names, output_names,
                keep_float: tuple[str, ...] = (), dims: tuple = (), fallbacks: list | None = None) -> tuple[list[dict], list[str]]:
    """Write one self-contained .onnx whose graph inputs and outputs carry the declared
    names, in declared order. Returns the dims exported as dynamic, and the names of the
    nodes that belong to the `keep_float` modules.

    With declared `dims` (per input) those are exported dynamic or the export fails.
    Without, the batch dimension of every input is made dynamic when the model allows it
    (ONNX Runtime handles it at no cost), else the declared shapes are kept and that is
    appended to `fallbacks`."""
    import onnx
    import torch

    from edgepack.exporters import converting, dynamic_shapes_spec, example_for, positional_outputs

    several = len(input_names) > 1
    # Outputs are named after the export (name_graph_io): torch.onnx renames an output to
    # a declared name even when an inner value already has it (a module named like the
    # output: MiniLM's "embedding"), and the graph fails ONNX's single-assignment check.
    common = dict(dynamo=True, external_data=False, optimize=True, verbose=False, input_names=list(input_names))
    module = positional_outputs(module, input_names, output_names)
    with _quiet(), torch.no_grad():
        if dims:
            xs = tuple(torch.from_numpy(a) for a in example_for(example, dims, at_max=False))
            with converting("onnx", "export", f"export with dynamic dims {[d.name for per in dims for d in per]} failed"):
                torch.onnx.export(module, xs, str(path), dynamic_shapes=dynamic_shapes_spec(dims), **common)
            applied = [{**({"input": n} if several else {}), **d.model_dump()} for n, per in zip(input_names, dims) for d in per]
        else:
            # A fresh C-contiguous example: torch.export rejects a dynamic batch dim traced
            # on a size-1 example with unusual strides (seen on numpy-derived inputs).
            xs = tuple(torch.from_numpy(np.ascontiguousarray(a)).clone() for a in example)
            try:
                batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
                torch.onnx.export(module, tuple(x.repeat(2, *([1] * (x.dim() - 1))) for x in xs), str(path),
                                  dynamic_shapes=tuple({0: batch} for _ in xs), **common)
                applied = [{**({"input": n} if several else {}), "dim": 0, "name": "batch", "min": 1, "max": MAX_BATCH}
                           for n in input_names]
            except torch.onnx.OnnxExporterError as e:  # the exporter's own failures; anything else is not a shape question
                if fallbacks is not None:
                    first = (str(e).strip().splitlines() or [""])[0][:300]
                    fallbacks.append({"step": "dynamic batch export", "taken": "static",
                                      "reason": f"{type(e).__name__}: {first}"})
                torch.onnx.export(module, xs, str(path), **common)
                applied = []
    model = onnx.load_model(str(path), load_external_data=True)
    sidecars = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    # The exported module is positional_outputs' wrapper: the model's modules sit under
    # its `inner`, and their scopes are named so.
    float_nodes = nodes_of_modules(model, tuple(f"inner.{m}" for m in keep_float)) if keep_float else []
    _strip_debug_metadata(model)
    name_graph_io(model.graph, input_names, output_names)
    onnx.save_model(model, str(path), save_as_external_data=False)  # one file (< 2 GB)
    for s in sidecars:
        (path.parent / s).unlink(missing_ok=True)
    onnx.checker.check_model(str(path))
    return applied, float_nodes


def _pre_process(quant_pre_process, src: Path, dst: Path, fallbacks: list | None) -> None:
    """onnxruntime's pre-processing (shape inference, basic graph optimisation). Its
    symbolic shape inference raises on some graphs ONNX's own inference handles (an
    Expand whose target shape it cannot follow: MiniLM's attention mask); then it is
    skipped, as quant_pre_process documents, and the fallback is recorded.

    Before raising, the symbolic pass saves its partial model as `sym_shape_infer_temp.onnx`
    in the working directory, so it runs with the destination's (temporary) folder as
    its working directory rather than litter the user's."""
    import os

    src, dst = src.resolve(), dst.resolve()
    before = os.getcwd()
    os.chdir(dst.parent)
    try:
        quant_pre_process(str(src), str(dst))
    except Exception as e:  # noqa: BLE001 - any failure of the symbolic pass; ONNX's own is tried next
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        if fallbacks is not None:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            fallbacks.append({"step": "symbolic shape inference", "taken": "ONNX shape inference only",
                              "reason": f"{type(e).__name__}: {first}"})
    finally:
        os.chdir(before)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: tuple, *, per_channel: bool = True,
                  symmetric_activations: bool = False, exclude: list[str] = (), method: str = "minmax",
                  percentile: float = 99.99, fallbacks: list | None = None, tuned=()) -> dict:
    """onnxruntime's static QDQ int8. Activation ranges come from quantize_static's own
    MinMax calibration, or for the other methods from exporters._onnx_calibration, handed
    over through quantize_static's calibration cache. Only float tensors are calibrated
    and quantized: integer inputs (token ids) and what is computed from them as integers
    are left as they are by onnxruntime. `tuned`: ranges tuned on the outputs
    (exporters._tuned_ranges); returns how many of them matched a tensor here ({} without)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepack.exporters._onnx_calibration import calibration_cache

    import onnx

    # onnxruntime's histogram calibrators print progress on stdout, which carries --json.
    with tempfile.TemporaryDirectory() as tmp, _quiet(), contextlib.redirect_stdout(io.StringIO()):
        pre = Path(tmp) / "pre.onnx"
        _pre_process(quant_pre_process, fp32_path, pre, fallbacks)
        graph_inputs = list(onnx.load_model(str(pre), load_external_data=False).graph.input)
        size, stop = calibration_batches(graph_inputs[0], len(calibration[0]))
        batches = [{g.name: np.ascontiguousarray(a[i : i + size]) for g, a in zip(graph_inputs, calibration)}
                   for i in range(0, stop, size)]
        # Unsigned activations (U8S8), chosen on what the device computes: on the ARM cores
        # edgepack targets U8S8 and S8S8 give the same outputs, but only U8S8 gives the same
        # outputs on x86 too, so the host pre-check describes the device (measured by
        # bench/onnx_int8_choices.py: MobileNetV2 88.1 % agreement with fp32 on Cortex-A76
        # and A53 either way; on x86 83.3 % with S8S8, 88.1 % with U8S8). Symmetric
        # activations need a zero point of 0, which only signed int8 has.
        activation = QuantType.QInt8 if symmetric_activations else QuantType.QUInt8
        common = dict(quant_format=QuantFormat.QDQ, activation_type=activation, weight_type=QuantType.QInt8,
                      per_channel=per_channel, reduce_range=False, use_external_data_format=False,
                      nodes_to_exclude=list(exclude),
                      extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True})
        matched: dict = {}
        if method == "minmax" and not tuned:
            quantize_static(str(pre), str(out_path), calibration_data_reader=_Batches(batches),
                            calibrate_method=CalibrationMethod.MinMax, **common)
        else:
            cache, kind, matched = calibration_cache(pre, batches, method=method, percentile=percentile,
                                                     symmetric=symmetric_activations, folder=Path(tmp), tuned=tuned)
            quantize_static(str(pre), str(out_path), calibrate_method=kind, calibration_cache_path=str(cache), **common)
    model = onnx.load_model(str(out_path))
    _strip_debug_metadata(model)
    onnx.save_model(model, str(out_path), save_as_external_data=False)
    return matched


def _Batches(batches: list[dict]):
    """quantize_static's data reader over prepared input feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rewind()

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(batches)

    return Reader()


def calibration_batches(graph_input, samples: int) -> tuple[int, int]:
    """The calibration batch size and where batches stop starting. Where the batch dim is
    dynamic, batches of 16 (the last one shorter) keep ORT's calibration memory flat on
    large calibration sets. A graph exported with a static batch (a .pt2 program traced at
    batch 1) takes exactly that many: only whole batches are fed."""
    batch = graph_input.type.tensor_type.shape.dim[0]
    if not batch.HasField("dim_value"):
        return 16, samples
    size = batch.dim_value
    if size > samples:
        raise ToolchainError(f"onnx: the model takes batches of exactly {size} and there are only "
                             f"{samples} calibration samples", format="onnx", stage="quantize")
    return size, samples - size + 1


def describe(path: Path) -> dict:
    """Counts that prove what the file holds: int8 initializers and Q/DQ nodes."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    by_type: dict[str, int] = {}
    for t in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(t.data_type).lower()
        by_type[name] = by_type.get(name, 0) + 1
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": len(model.graph.node), "initializers_by_dtype": dict(sorted(by_type.items())),
            "ops": dict(sorted(ops.items()))}


def quantize_dynamic_int8(fp32_path: Path, out_path: Path, *, per_channel: bool, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         nodes_to_exclude=list(exclude), use_external_data_format=False)


def convert_fp16(fp32_path: Path, out_path: Path, *, exclude: list[str]) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Inputs and outputs stay float32 (casts inside), so callers feed the same arrays.
    model = convert_float_to_float16(onnx.load_model(str(fp32_path)), keep_io_types=True, node_block_list=list(exclude))
    onnx.save_model(model, str(out_path), save_as_external_data=False)


def _int8(fp32: Path, out: Path, req, exclude: list[str], fallbacks: list) -> dict:
    opts = req.options
    matched = quantize_int8(fp32, out, req.calibration, per_channel=opts.weights == "per_channel",
                            symmetric_activations=opts.activations == "symmetric", exclude=exclude,
                            method=opts.calibration, percentile=opts.percentile, fallbacks=fallbacks,
                            tuned=opts.tuned_ranges)
    return {"range_tuning": matched} if matched else {}


def _int8_dynamic(fp32: Path, out: Path, req, exclude: list[str], fallbacks: list) -> None:
    quantize_dynamic_int8(fp32, out, per_channel=req.options.weights == "per_channel", exclude=exclude)


def _fp16(fp32: Path, out: Path, req, exclude: list[str], fallbacks: list) -> None:
    convert_fp16(fp32, out, exclude=exclude)


# Each precision from the fp32 export: onnxruntime's conversion, or none.
CONVERSIONS = {"fp32": None, "fp16": _fp16, "int8": _int8, "int8-dynamic": _int8_dynamic}


def export(req) -> dict:
    from edgepack.exporters import converting

    out, opts = req.out_path, req.options
    conversion = CONVERSIONS[req.precision]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = out if req.precision == "fp32" else Path(tmp) / "fp32.onnx"
        fallbacks: list[dict] = []
        if req.source_kind == "pytorch":
            applied, float_nodes = export_fp32(req.module, req.example, fp32, input_names=req.input_names,
                                               output_names=req.output_names, keep_float=opts.keep_float,
                                               dims=tuple(req.dynamic_dims), fallbacks=fallbacks)
        else:
            from edgepack.exporters.onnx_sources import write_fp32

            applied, float_nodes = write_fp32(req, fp32), []
        if opts.keep_float and req.precision != "fp32" and not float_nodes:
            raise ToolchainError(f"onnx: no exported node belongs to keep_float modules {list(opts.keep_float)}; "
                                 "name modules as model.named_modules() does", format="onnx", stage="quantize")
        nodes_before = len(onnx_nodes(fp32))
        extra = None
        if conversion is not None:
            with converting("onnx", "quantize", f"{req.precision} conversion (onnxruntime) failed"):
                extra = conversion(fp32, out, req, float_nodes, fallbacks)
        simplified = simplify(out)
    info = {**describe(out), **(extra or {}), "dynamic_dims": applied, "float_nodes": float_nodes,
            "nodes_exported": nodes_before, "simplify": simplified, **({"fallbacks": fallbacks} if fallbacks else {})}
    if req.precision == "int8":  # static: its activation ranges were calibrated
        from edgepack.exporters._onnx_calibration import describe as calibration

        info["calibration"] = calibration(opts.calibration, opts.percentile)
    if req.precision.startswith("int8") and not info["initializers_by_dtype"].get("int8"):
        raise ToolchainError("onnx: int8 quantization produced no int8 weights", format="onnx", stage="quantize")
    return info


def onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load_model(str(path), load_external_data=False).graph.node)


def simplify(path: Path) -> dict:
    """Constant folding, dead-node removal and pattern fusion with onnxslim; the result is
    kept only if onnxruntime still loads it. Reports node counts before and after."""
    import onnx

    before = len(onnx_nodes(path))
    try:
        import onnxslim

        # No weight tying: it merges identical initializers, and a zero-point shared by
        # several DequantizeLinear nodes makes ONNX Runtime refuse the file under
        # session.x64quantprecision ("Attempt to replace the existing tensor"), the
        # exact int8 kernels every x86 verification runs with (devices/runner_script.py).
        with _quiet():
            slim = onnxslim.slim(onnx.load_model(str(path)), skip_optimizations=["weight_tying"])
        candidate = path.with_suffix(".slim.onnx")
        onnx.save_model(slim, str(candidate), save_as_external_data=False)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.x64quantprecision", "1")
        ort.InferenceSession(str(candidate), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # simplification is an optimisation: never fail a build over it
        path.with_suffix(".slim.onnx").unlink(missing_ok=True)
        return {"tool": "onnxslim", "applied": False, "reason": f"{type(e).__name__}: {str(e)[:120]}", "nodes_before": before, "nodes_after": before}
    after = len(onnx_nodes(candidate))
    candidate.replace(path)
    return {"tool": "onnxslim", "applied": True, "nodes_before": before, "nodes_after": after}
