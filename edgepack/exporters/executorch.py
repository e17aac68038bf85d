"""ExecuTorch: `torch.export` -> PT2E int8 with the XNNPACK quantizer (torchao) ->
`to_edge_transform_and_lower` with the XNNPACK partitioner -> `.pte`.

The quantizer decides *what* is int8; the partitioner decides *what runs on XNNPACK*.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from edgepack.errors import ToolchainError

from edgepack.exporters._pt2e import as_tensor, capture_for_calibration


def _quiet_imports() -> None:
    # torchao logs "Failed to load ..._C_mxfp8.so" (CUDA-only extensions) at import, and
    # torch's pytree warns about an Enum it registers; neither matters on CPU.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _lower(program, path) -> dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    except Exception as e:
        raise ToolchainError(f"executorch: lowering to XNNPACK failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                             format="executorch", stage="lower") from e
    lowered = edge.exported_program()
    info = get_delegation_info(lowered.graph_module)
    int8 = 0
    for name, child in lowered.graph_module.named_children():
        if name.startswith("lowered_module_"):
            sub = child.original_module
            int8 += sum(1 for t in [*sub.state_dict.values(), *sub.constants.values()]
                        if hasattr(t, "dtype") and str(t.dtype) == "torch.int8")
    path.write_bytes(edge.to_executorch().buffer)
    non_delegated = {k: v.non_delegated for k, v in info.delegation_by_operator.items() if v.non_delegated}
    # The delegate's own output unpacking (getitem) is bookkeeping, not compute left behind.
    non_delegated.pop("getitem", None)
    return {
        "backend": "XnnpackBackend",
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_ops": dict(sorted(non_delegated.items())),
        "int8_delegate_tensors": int8,
        "dynamic_batch": False,
    }


def _fp16_module(module):
    """The model in half precision behind float32 inputs and outputs: XNNPACK runs the
    fp16 kernels, callers keep feeding float32 arrays."""
    import copy

    import torch

    class Float16(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.to(torch.float16)).to(torch.float32)

    return Float16(copy.deepcopy(module).half()).eval()


def export(req) -> dict:
    _quiet_imports()
    import torch

    opts = req.options
    module = req.module.eval()
    example = as_tensor(req.example)
    if req.precision in ("fp32", "fp16"):
        if req.precision == "fp16":
            module = _fp16_module(module)
        with torch.no_grad():
            program = torch.export.export(module, (example,))
        return {**_lower(program, req.out_path), "precision": req.precision}
    if req.precision not in ("int8", "int8-dynamic"):
        raise ToolchainError(f"executorch: precision {req.precision!r} is not supported; valid: fp32, fp16, int8, int8-dynamic", format="executorch")

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = req.precision == "int8-dynamic"
    try:
        # Capture, calibrate, convert, then re-export at the deployed (static) input shape.
        captured, calibration = capture_for_calibration(module, example, req.calibration)
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=opts.weights == "per_channel", is_dynamic=dynamic))
        for name in opts.keep_float:  # mixed precision: these modules stay float
            quantizer.set_module_name(name, None)
        prepared = prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for batch in calibration[: 1 if dynamic else None]:  # dynamic ranges need no calibration
                prepared(batch)
        converted = convert_pt2e(prepared)
        with torch.no_grad():
            program = torch.export.export(converted, (example,))
    except ToolchainError:
        raise
    except Exception as e:
        raise ToolchainError(f"executorch: PT2E {req.precision} quantization failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                             format="executorch", stage="quantize") from e
    info = _lower(program, req.out_path)
    if info["int8_delegate_tensors"] == 0:
        raise ToolchainError("executorch: the XNNPACK delegate holds no int8 weights after quantization", format="executorch", stage="quantize")
    return {**info, "weights": opts.weights, "keep_float": list(opts.keep_float)}
