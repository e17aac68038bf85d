"""ExecuTorch: `torch.export` -> PT2E int8 with the XNNPACK quantizer (torchao) ->
`to_edge_transform_and_lower` with the XNNPACK partitioner -> `.pte`.

The quantizer decides *what* is int8; the partitioner decides *what runs on XNNPACK*.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from edgepack.errors import ToolchainError

CALIBRATION_BATCH = 32


def _quiet_imports() -> None:
    # torchao logs "Failed to load ..._C_mxfp8.so" (CUDA-only extensions) at import, and
    # torch's pytree warns about an Enum it registers; neither matters on CPU.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _canon(x) -> "torch.Tensor":  # noqa: F821
    """A row-major float32 copy. Arrays sliced from numpy can carry strides such as
    (64, 1, 8, 1) on size-1 dims; `is_contiguous()` accepts them, torch.export records
    them, and lowering then leaves an as_strided_copy outside XNNPACK that fails at run time."""
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t.clone(memory_format=torch.contiguous_format)


def _dynamic_batch(example, bound: int):
    """Trace with batch == bound: a batch-1 example gets specialised to the constant 1,
    and a small example lets conv backend guards silently narrow the batch range."""
    import torch

    traced = example[:1].expand(bound, *example.shape[1:]).clone()
    return traced, ({0: torch.export.Dim("batch", min=1, max=bound)},)


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
    example = _canon(req.example)
    if req.precision == "fp32":
        with torch.no_grad():
            program = torch.export.export(module, (example,))
        return _lower(program, req.out_path)
    if req.precision != "int8":
        raise ToolchainError(f"executorch: precision {req.precision!r} is not supported; valid: fp32, int8", format="executorch")

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    calibration = [_canon(req.calibration[i : i + CALIBRATION_BATCH]) for i in range(0, len(req.calibration), CALIBRATION_BATCH)]
    try:
        # Capture with a dynamic batch so calibration batches of any size pass the guards,
        # calibrate, convert, then re-export at the deployed (static) input shape.
        bound = max(2, example.shape[0], *(b.shape[0] for b in calibration))
        traced, shapes = _dynamic_batch(example, bound)
        captured = torch.export.export(module, (traced,), dynamic_shapes=shapes).module()
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
