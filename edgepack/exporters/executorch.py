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


def export(req) -> dict:
    _quiet_imports()
    import torch

    module = req.module.eval()
    example = as_tensor(req.example)
    if req.precision == "fp32":
        with torch.no_grad():
            program = torch.export.export(module, (example,))
        return _lower(program, req.out_path)
    if req.precision != "int8":
        raise ToolchainError(f"executorch: precision {req.precision!r} is not supported; valid: fp32, int8", format="executorch")

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    try:
        # Capture, calibrate, convert, then re-export at the deployed (static) input shape.
        captured, calibration = capture_for_calibration(module, example, req.calibration)
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for batch in calibration:
                prepared(batch)
        converted = convert_pt2e(prepared)
        with torch.no_grad():
            program = torch.export.export(converted, (example,))
    except ToolchainError:
        raise
    except Exception as e:
        raise ToolchainError(f"executorch: PT2E int8 quantization failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                             format="executorch", stage="quantize") from e
    info = _lower(program, req.out_path)
    if info["int8_delegate_tensors"] == 0:
        raise ToolchainError("executorch: the XNNPACK delegate holds no int8 weights after quantization", format="executorch", stage="quantize")
    return info
