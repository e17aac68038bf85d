"""ExecuTorch: `torch.export` -> PT2E int8 with the XNNPACK quantizer (torchao) ->
`to_edge_transform_and_lower` with the XNNPACK partitioner -> `.pte`.

The quantizer decides *what* is int8; the partitioner decides *what runs on XNNPACK*.
With `delegate = "none"` there is no partitioner: every op stays in the program for
ExecuTorch's own CPU kernels (portable and optimized ops, and the quantized-ops library
for int8's quantize/dequantize nodes).
"""

from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext

from edgepack.errors import ToolchainError
from edgepack.exporters import converting, positional_outputs
from edgepack.exporters._pt2e import (batch_bound, calibrate_and_convert, calibration_details, capture_for_calibration,
                                      fallback_details, prepare)


def _quiet_imports() -> None:
    # torchao logs "Failed to load ..._C_mxfp8.so" (CUDA-only extensions) at import, and
    # torch's pytree warns about an Enum it registers; neither matters on CPU.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _prelu_on_rank4():
    """An edge pass giving every PReLU a 4-d input.

    XNNPACK's channels-last pass tags PReLU as an NHWC op and refuses one on a rank-2 or
    rank-3 tensor ("Attempting to convert non-NHWC compatible node to NHWC"), so a PReLU
    after a Linear (MTCNN's O-Net, many face and speech nets) fails the whole lowering.
    ExecuTorch 1.5 has no option for it: trailing unit dims are added before the PReLU
    and removed after it, which computes the same (channels stay dim 1).

    An ExportPass re-traces the whole program (about a second of a MobileNetV2 export,
    sampled), so a program with no such PReLU is left as it is."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass, PassResult

    edge = exir_ops.edge.aten

    def low_rank_prelu(graph_module) -> bool:
        for module in graph_module.modules():
            if not isinstance(module, torch.fx.GraphModule):
                continue
            for node in module.graph.nodes:
                if node.op == "call_function" and node.target == edge.prelu.default:
                    value = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
                    if value is None or value.dim() < 4:
                        return True
        return False

    class PReLUOnRank4(ExportPass):
        def call(self, graph_module):
            if not low_rank_prelu(graph_module):
                return PassResult(graph_module, False)
            return super().call(graph_module)

        def call_operator(self, op, args, kwargs, meta):
            if op != edge.prelu.default or args[0].to_tensor().dim() >= 4:
                return super().call_operator(op, args, kwargs, meta)
            x, rank = args[0], args[0].to_tensor().dim()
            for _ in range(4 - rank):
                x = super().call_operator(edge.unsqueeze_copy.default, (x, -1), {}, meta)
            y = super().call_operator(op, (x, *args[1:]), kwargs, meta)
            return super().call_operator(edge.squeeze_copy.dims, (y, list(range(rank, 4))), {}, meta)

    return PReLUOnRank4()


def _float_conv1d_activation_unfused():
    """An edge pass that keeps XNNPACK from fusing a ReLU (or hardtanh) into a float
    1-d convolution, by writing the activation as the same clamp.

    A float Conv1d (one kept float by keep_float) whose activation feeds an int8 layer
    fails at run time ("Failed to create convolution node ... invalid_parameter"):
    XNNPACK's FuseActivationPass folds the ReLU into the convolution, whose only user is
    then the next layer's quantize op, and its Conv1dUnsqueezePass takes that for a
    quantized convolution and puts a quantize/dequantize pair on the float convolution's
    output. A clamp is not fused, so the convolution stays float in and out and the clamp
    runs in the delegate; int8 convolutions (dequantized weights) are left alone."""
    import torch
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import PassBase, PassResult

    edge = exir_ops.edge.aten

    def float_conv1d(node) -> bool:
        if not isinstance(node, torch.fx.Node) or node.target != edge.convolution.default:
            return False
        weight = node.args[1]
        value = weight.meta.get("val") if isinstance(weight, torch.fx.Node) else None
        return (value is not None and value.dim() == 3 and value.dtype == torch.float32
                and "dequantize" not in str(weight.target))

    class Unfused(PassBase):
        def call(self, graph_module):
            changed = False
            for node in list(graph_module.graph.nodes):
                if node.op != "call_function" or not float_conv1d(node.args[0] if node.args else None):
                    continue
                if node.target == edge.relu.default:
                    low, high = 0.0, None
                elif node.target == edge.hardtanh.default:
                    # hardtanh's defaults are (-1, 1); ReLU6 is captured as hardtanh(x, 0, 6)
                    low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
                    high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
                else:
                    continue
                with graph_module.graph.inserting_after(node):
                    clamp = graph_module.graph.call_function(edge.clamp.default, (node.args[0], low, high))
                clamp.meta = dict(node.meta)
                node.replace_all_uses_with(clamp)
                graph_module.graph.erase_node(node)
                changed = True
            if changed:
                graph_module.recompile()
            return PassResult(graph_module, changed)

    return Unfused()


def _lower(program, path, dims=(), delegate: str = "xnnpack", dims_record=None) -> dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    partitioners = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    if not partitioners:
        # Registers the out variants of int8's quantize/dequantize ops, which the
        # XNNPACK delegate otherwise absorbs; without them to_executorch cannot emit them.
        import executorch.kernels.quantized  # noqa: F401
    with converting("executorch", "lower", "lowering to XNNPACK failed" if partitioners else "lowering to ExecuTorch's own kernels failed"):
        edge = to_edge_transform_and_lower(program, partitioner=partitioners,
                                           transform_passes=[_prelu_on_rank4(), _float_conv1d_activation_unfused()]
                                           if partitioners else [])
    lowered = edge.exported_program()
    info = get_delegation_info(lowered.graph_module)
    int8 = 0
    for name, child in lowered.graph_module.named_children():
        if name.startswith("lowered_module_"):
            sub = child.original_module
            int8 += sum(1 for t in [*sub.state_dict.values(), *sub.constants.values()]
                        if hasattr(t, "dtype") and str(t.dtype) == "torch.int8")
    program_et = edge.to_executorch()
    placeholders = [n for n in program_et.exported_program().graph.nodes if n.op == "placeholder"]
    user_inputs = placeholders[len(placeholders) - len(dims):] if dims else []
    for placeholder, per_input in zip(user_inputs, dims):
        for d in per_input:
            # XNNPACK's lowering re-runs shape guards with the traced size; check the planned
            # capacity really reaches the declared max instead of trusting the request.
            from executorch.exir.sym_util import eval_upper_bound

            capacity = eval_upper_bound(placeholder.meta["val"].shape[d.dim])
            if capacity != d.max:
                raise ToolchainError(f"executorch: dynamic dim {d.name!r} was planned for at most {capacity}, not {d.max}",
                                     format="executorch", stage="lower")
    path.write_bytes(program_et.buffer)
    non_delegated = {k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated}
    # The delegate's own output unpacking (getitem) is bookkeeping, not compute left behind.
    non_delegated.pop("getitem", None)
    return {
        "backend": "XnnpackBackend" if partitioners else "none",
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_ops": dict(sorted(non_delegated.items())),
        "int8_delegate_tensors": int8,
        "dynamic_dims": dims_record or [],
    }


def _fp16_module(module):
    """The model in half precision behind float32 inputs and outputs: XNNPACK runs the
    fp16 kernels, callers keep feeding float32 arrays (integer inputs pass as they are)."""
    import copy

    import torch

    def cast(t, dtype):
        return t.to(dtype) if t.is_floating_point() else t

    class Float16(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            out = self.inner(*(cast(x, torch.float16) for x in xs))
            if isinstance(out, torch.Tensor):
                return cast(out, torch.float32)
            if isinstance(out, dict):
                return {k: cast(v, torch.float32) for k, v in out.items()}
            return tuple(cast(v, torch.float32) for v in out)

    return Float16(copy.deepcopy(module).half()).eval()


def _prepare(req):
    """The request traced for export, and `export_program(module)` over torch.export."""
    _quiet_imports()
    import torch

    # With dynamic dims the program is traced at each dim's max: XNNPACK's lowering
    # evaluates shape guards at the traced size, and a small one silently narrows the range.
    p = prepare(req, trace_at_max=True)

    def export_program(m):
        # Without dynamic dims a failure is the model's, worded by the step that called this.
        wording = converting("executorch", "export", f"torch.export with dynamic dims {[d.name for d in p.flat_dims]} failed") \
            if p.dims else nullcontext()
        with wording, torch.no_grad():
            return torch.export.export(positional_outputs(m, req.input_names, req.output_names), p.traced, dynamic_shapes=p.shapes)

    return p, export_program


def export_fp32(req) -> dict:
    p, export_program = _prepare(req)
    return {**_lower(export_program(p.module), req.out_path, p.dims, req.delegate, req.dims_record()),
            "precision": req.precision}


def export_fp16(req) -> dict:
    p, export_program = _prepare(req)
    return {**_lower(export_program(_fp16_module(p.module)), req.out_path, p.dims, req.delegate, req.dims_record()),
            "precision": req.precision}


def export_int8(req) -> dict:
    return _export_int8(req, dynamic=False)


def export_int8_dynamic(req) -> dict:
    return _export_int8(req, dynamic=True)


def _export_int8(req, *, dynamic: bool) -> dict:
    p, export_program = _prepare(req)
    opts, dims = p.opts, p.dims
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    from edgepack.exporters._xnnpack_quantizer import quantizer as xnnpack_quantizer

    with converting("executorch", "quantize", f"PT2E {req.precision} quantization failed"):
        # Capture, calibrate, convert, then re-export at the deployed (static) input shape.
        fallbacks: list[dict] = []
        captured, calibration = capture_for_calibration(p.module, p.example, req.calibration, min_bound=batch_bound(dims),
                                                        fallbacks=fallbacks)
        from edgepack.exporters._observers import with_activation_observer

        quantizer = xnnpack_quantizer().set_global(with_activation_observer(
            get_symmetric_quantization_config(is_per_channel=opts.weights == "per_channel", is_dynamic=dynamic), opts))
        tuning: dict = {}
        converted = calibrate_and_convert(captured, quantizer, calibration, opts=opts, dynamic=dynamic, fmt="executorch",
                                          details=tuning)
        program = export_program(converted)
    info = _lower(program, req.out_path, dims, req.delegate, req.dims_record())
    if req.delegate == "xnnpack" and info["int8_delegate_tensors"] == 0:
        raise ToolchainError("executorch: the XNNPACK delegate holds no int8 weights after quantization", format="executorch", stage="quantize")
    return {**info, "weights": opts.weights, "keep_float": list(opts.keep_float), **calibration_details(opts, dynamic=dynamic),
            **fallback_details(fallbacks, req.calibration, calibration, dynamic=dynamic), **tuning}
