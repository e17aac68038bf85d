"""LiteRT (TFLite): `litert_torch.convert`, with int8 through litert-torch's own PT2E
quantizer (per-channel symmetric weights, calibrated int8 activations).

The int8 model is full-integer, inputs and outputs included (their scale and zero point
are in the manifest): that is what litert-torch's public API produces. Keeping float
inputs would need a private converter switch, which we do not touch.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext

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


def describe(path) -> dict:
    """Tensor dtypes, ops and I/O quantization: proof of what the file really computes in."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = interpreter.get_tensor_details()
    by_dtype: dict[str, int] = {}
    for t in tensors:
        by_dtype[t["dtype"].__name__] = by_dtype.get(t["dtype"].__name__, 0) + 1
    weights = [t for t in tensors if len(t["shape"]) >= 2 and len(t["quantization_parameters"]["scales"]) > 1]
    ops: dict[str, int] = {}
    # The interpreter lists ops only through this private call; it is informational, so
    # a runtime without it just leaves the op table empty.
    for op in getattr(interpreter, "_get_ops_details", lambda: [])():
        if op["op_name"] != "DELEGATE":
            ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1

    def io(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__,
                **({"scale": float(scale), "zero_point": int(zero)} if scale else {})}

    return {
        "tensors_by_dtype": dict(sorted(by_dtype.items())),
        "per_channel_int8_weights": sum(1 for t in weights if t["dtype"].__name__ == "int8"),
        "ops": dict(sorted(ops.items())),
        "inputs": [io(d) for d in interpreter.get_input_details()],
        "outputs": [io(d) for d in interpreter.get_output_details()],
    }


def _prepare(req):
    """The request traced for conversion, and `convert(module, **kw)` over litert-torch."""
    _quiet_imports()
    import litert_torch

    # Dynamic dims are traced at max(2, min): a size-1 trace specialises to the constant 1.
    p = prepare(req, trace_at_max=False)
    names = [d.name for d in p.dims]

    def convert(m, **kw):
        with converting("tflite", "convert", f"litert-torch cannot convert this model with dynamic dims {names}",
                        hint="; ops that reshape with a symbolic size (e.g. Flatten) need static shapes in LiteRT: "
                             "set dynamic = false on the tflite artifact") if p.dims else nullcontext():
            return litert_torch.convert(m, (p.traced,), dynamic_shapes=p.shapes, **kw)

    return p, convert


def _finish(info: dict, dims) -> dict:
    info["dynamic_dims"] = [d.model_dump() for d in dims]
    return info


def export_fp32(req) -> dict:
    p, convert = _prepare(req)
    convert(p.module).export(str(req.out_path))
    return _finish(describe(req.out_path), p.dims)


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
    return _finish(info, p.dims)


def export_int8(req) -> dict:
    return _export_int8(req, dynamic=False)


def export_int8_dynamic(req) -> dict:
    return _export_int8(req, dynamic=True)


def _export_int8(req, *, dynamic: bool) -> dict:
    p, convert = _prepare(req)
    opts, dims = p.opts, p.dims
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    with converting("tflite", "quantize", f"PT2E {req.precision} quantization failed"):
        # litert-torch's quantizer finds add, mul, cat, GRU and module patterns by their
        # source call: without a strict capture a residual add stays float and the model
        # is not full-integer (MobileNetV2's chained residual blocks).
        fallbacks: list[dict] = []
        captured, calibration = capture_for_calibration(p.module, p.example, req.calibration, strict=True,
                                                        min_bound=batch_bound(dims), fallbacks=fallbacks)
        from edgepack.exporters._observers import with_activation_observer

        quantizer = PT2EQuantizer().set_global(with_activation_observer(
            get_symmetric_quantization_config(is_per_channel=opts.weights == "per_channel", is_dynamic=dynamic), opts))
        converted = calibrate_and_convert(captured, quantizer, calibration, opts=opts, dynamic=dynamic, fold_quantize=False,
                                          fmt="tflite")
        converted.training = False  # exported from an eval() model; .eval() is not allowed on it
    with converting("tflite", "convert", "LiteRT conversion failed"):
        convert(converted, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(req.out_path))
    info = _finish({**describe(req.out_path), "weights": opts.weights, "keep_float": list(opts.keep_float),
                    **calibration_details(opts, dynamic=dynamic),
                    **fallback_details(fallbacks, req.calibration, calibration, dynamic=dynamic)}, dims)
    if not info["per_channel_int8_weights"] and not info["tensors_by_dtype"].get("int8"):
        raise ToolchainError(f"tflite: the converted model holds no int8 weights (tensor dtypes {info['tensors_by_dtype']})",
                             format="tflite", stage="convert")
    if not dynamic and not opts.keep_float and info["tensors_by_dtype"].get("float32", 0) > 0:
        raise ToolchainError(f"tflite: the converted model is not full-integer int8 (tensor dtypes {info['tensors_by_dtype']})",
                             format="tflite", stage="convert")
    return info
