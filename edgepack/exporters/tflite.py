"""LiteRT (TFLite): `litert_torch.convert`, with int8 through litert-torch's own PT2E
quantizer (per-channel symmetric weights, calibrated int8 activations).

The int8 model is full-integer, inputs and outputs included (their scale and zero point
are in the manifest): that is what litert-torch's public API produces. Keeping float
inputs would need a private converter switch, which we do not touch. A model with an op
the converter leaves in float is refused unless the quantize stage says
`strict_int8 = false`; the ops that compute in float are in `float_ops` either way.
Hard-sigmoid is quantized by decomposing it first (exporters/_litert_quantizer.py).
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext

import numpy as np

from edgepack.errors import ToolchainError
from edgepack.exporters import converting
from edgepack.exporters._pt2e import (batch_bound, calibrate_and_convert, calibration_details, capture_for_calibration,
                                      fallback_details, prepare)


def _quiet_imports() -> None:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")        # oneDNN banner at import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")          # converter INFO lines
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")    # progress lines on stdout
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def describe(path, *, with_float_ops: bool = False) -> dict:
    """Tensor dtypes, ops and I/O quantization: proof of what the file really computes in.
    `with_float_ops` (static int8): also the ops that compute in float, by type."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = interpreter.get_tensor_details()
    by_dtype: dict[str, int] = {}
    for t in tensors:
        by_dtype[t["dtype"].__name__] = by_dtype.get(t["dtype"].__name__, 0) + 1
    weights = [t for t in tensors if len(t["shape"]) >= 2 and len(t["quantization_parameters"]["scales"]) > 1]
    ops: dict[str, int] = {}
    float_ops: dict[str, int] = {}
    dtype_of = {t["index"]: t["dtype"].__name__ for t in tensors}
    # The interpreter lists ops only through this private call; it is informational, so
    # a runtime without it just leaves the op tables empty.
    for op in getattr(interpreter, "_get_ops_details", lambda: [])():
        if op["op_name"] != "DELEGATE":
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        # Ops computing in float: QUANTIZE and DEQUANTIZE only convert at their borders.
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "DELEGATE") and any(
                dtype_of.get(i) in ("float32", "float16") for i in [*op["inputs"], *op["outputs"]] if i >= 0):
            float_ops[op["op_name"]] = float_ops.get(op["op_name"], 0) + 1

    def io(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__,
                **({"scale": float(scale), "zero_point": int(zero)} if scale else {})}

    signatures = interpreter.get_signature_list()
    # In signature order (the declared order), named as the signature names them.
    runner = interpreter.get_signature_runner()
    named_in, named_out = runner.get_input_details(), runner.get_output_details()
    inputs = [{**d, "name": n} for n, d in named_in.items()] or interpreter.get_input_details()
    outputs = [{**d, "name": n} for n, d in named_out.items()] or interpreter.get_output_details()
    return {
        "signature": {"name": next(iter(signatures), None), **next(iter(signatures.values()), {})},
        "tensors_by_dtype": dict(sorted(by_dtype.items())),
        "per_channel_int8_weights": sum(1 for t in weights if t["dtype"].__name__ == "int8"),
        "ops": dict(sorted(ops.items())),
        **({"float_ops": dict(sorted(float_ops.items()))} if with_float_ops else {}),
        "inputs": [io(d) for d in inputs],
        "outputs": [io(d) for d in outputs],
    }


def named_signature(module, input_names, output_names):
    """`module` behind a forward() whose parameters are the declared input names and which
    returns a dict keyed by the declared output names. litert-torch names a signature's
    inputs after the keyword arguments it is traced with and its outputs after the keys of
    a returned dict (else `args_0`, `output_0`): with this wrapper the .tflite signature
    carries the project's names, in declared order."""
    import inspect

    import torch

    from edgepack.modelio import output_tensors

    class NamedSignature(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            values = [*args, *(kwargs[n] for n in input_names[len(args):])]
            return dict(zip(output_names, output_tensors(self.inner(*values), output_names)))

    # torch.export binds the traced kwargs against forward()'s signature.
    P = inspect.Parameter
    NamedSignature.forward.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), *(P(n, P.POSITIONAL_OR_KEYWORD) for n in input_names)])
    wrapper = NamedSignature(module)
    wrapper.training = False  # the flag converters read; an exported program's module refuses .eval()
    return wrapper


def describe_ops(counts: dict) -> str:
    """`ADD x9, MUL x9`, or `none`."""
    return ", ".join(f"{op} x{n}" for op, n in counts.items()) or "none"


def _prepare(req):
    """The request traced for conversion, and `convert(module, **kw)` over litert-torch."""
    _quiet_imports()
    import litert_torch

    # Dynamic dims are traced at max(2, min): a size-1 trace specialises to the constant 1.
    p = prepare(req, trace_at_max=False)
    names = [d.name for d in p.flat_dims]
    inputs = list(req.input_names)
    # int64 inputs (token ids) stay int64: without enable_x64 the converter narrows them
    # (and int64 outputs) to int32, and a caller feeding int64 ids would be refused.
    x64 = any(a.dtype == np.int64 for a in req.example)

    def convert(m, **kw):
        with converting("tflite", "convert", f"litert-torch cannot convert this model with dynamic dims {names}",
                        hint="; ops that reshape with a symbolic size (e.g. Flatten) need static shapes in LiteRT: "
                             "set dynamic = false on the tflite artifact") if p.dims else nullcontext():
            return litert_torch.convert(
                named_signature(m, inputs, list(req.output_names)), sample_kwargs=dict(zip(inputs, p.traced)),
                dynamic_shapes=dict(zip(inputs, p.shapes)) if p.shapes else None, enable_x64=x64, **kw)

    return p, convert


def _finish(info: dict, req) -> dict:
    info["dynamic_dims"] = req.dims_record()
    return info


def export_fp32(req) -> dict:
    p, convert = _prepare(req)
    convert(p.module).export(str(req.out_path))
    return _finish(describe(req.out_path), req)


def export_fp16(req) -> dict:
    p, convert = _prepare(req)
    from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

    # fp16 weights, dequantized to fp32 at load time by the runtime (or computed in
    # fp16 by XNNPACK where the CPU has it); inputs and outputs stay float32.
    with converting("tflite", "convert", "fp16 conversion failed"):
        convert(p.module, quant_config=full_fp16_recipe()).export(str(req.out_path))
    info = describe(req.out_path)
    if not info["tensors_by_dtype"].get("float16"):
        raise ToolchainError("tflite: fp16 conversion left no float16 tensors", format="tflite", stage="convert")
    return _finish(info, req)


def export_int8(req) -> dict:
    return _export_int8(req, dynamic=False)


def export_int8_dynamic(req) -> dict:
    return _export_int8(req, dynamic=True)


def _export_int8(req, *, dynamic: bool) -> dict:
    p, convert = _prepare(req)
    opts, dims = p.opts, p.dims
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    from edgepack.exporters._litert_quantizer import quantizer as litert_quantizer

    with converting("tflite", "quantize", f"PT2E {req.precision} quantization failed"):
        # litert-torch's quantizer finds add, mul, cat, GRU and module patterns by their
        # source call: without a strict capture a residual add stays float and the model
        # is not full-integer (MobileNetV2's chained residual blocks).
        fallbacks: list[dict] = []
        captured, calibration = capture_for_calibration(p.module, p.example, req.calibration, strict=True,
                                                        min_bound=batch_bound(dims), fallbacks=fallbacks)
        from edgepack.exporters._observers import with_activation_observer

        quantizer = litert_quantizer().set_global(with_activation_observer(
            get_symmetric_quantization_config(is_per_channel=opts.weights == "per_channel", is_dynamic=dynamic), opts))
        tuning: dict = {}
        converted = calibrate_and_convert(captured, quantizer, calibration, opts=opts, dynamic=dynamic, fold_quantize=False,
                                          fmt="tflite", details=tuning)
        converted.training = False  # exported from an eval() model; .eval() is not allowed on it
    with converting("tflite", "convert", "LiteRT conversion failed"):
        convert(converted, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(req.out_path))
    info = _finish({**describe(req.out_path, with_float_ops=not dynamic), "weights": opts.weights, "keep_float": list(opts.keep_float),
                    **calibration_details(opts, dynamic=dynamic),
                    **fallback_details(fallbacks, req.calibration, calibration, dynamic=dynamic), **tuning}, req)
    if not info["per_channel_int8_weights"] and not info["tensors_by_dtype"].get("int8"):
        raise ToolchainError(f"tflite: the converted model holds no int8 weights (tensor dtypes {info['tensors_by_dtype']})",
                             format="tflite", stage="convert")
    # An embedding table behind an integer input (token ids) is not annotated by the
    # quantizer and stays float: full-integer is asked of models with float inputs only.
    if (not dynamic and not opts.keep_float and opts.strict_int8 and all(req.float_inputs)
            and info["tensors_by_dtype"].get("float32", 0) > 0):
        raise ToolchainError(f"tflite: the converted model is not full-integer int8 (float ops: {describe_ops(info['float_ops'])}; "
                             f"tensor dtypes {info['tensors_by_dtype']}); set strict_int8 = false in the quantize stage "
                             "to build it with these ops in float", format="tflite", stage="convert")
    return info
