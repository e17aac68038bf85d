"""litert-torch's PT2E quantizer, with hard-sigmoid made quantizable.

litert-torch lowers `aten.hardswish` to LiteRT's HARD_SWISH, which has an int8 kernel,
so the quantize/dequantize pair the neighbouring ops put around it makes it int8. LiteRT
has no hard-sigmoid op: litert-torch decomposes `aten.hardsigmoid` while lowering, into
ADD(x, 3) with a fused ReLU6 and MUL by 1/6, and those two get no quantization
parameters of their own, so they run in float32 between a DEQUANTIZE and a QUANTIZE
(MobileNetV3's squeeze-excite gates: 29 float32 tensors in MobileNetV3-Small).

Here the decomposition happens before annotation instead, in the quantizer's own hook for
graph rewrites (`transform_for_annotation`), as `hardtanh(x + 3, 0, 6) * (1/6)`. Each new
node carries the source call a strict capture records for that Python expression, so
litert-torch's own `add` and `mul` annotators quantize them and its annotation
propagation gives the clamp its input's parameters: ADD (ReLU6 fused) and MUL in int8.
"""

from __future__ import annotations

import operator


def quantizer():
    """A `PT2EQuantizer` whose graphs have hard-sigmoid spelt in ops it annotates."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    class _Quantizer(PT2EQuantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            decompose_hardsigmoid(model)
            return super().transform_for_annotation(model)

    return _Quantizer()


def decompose_hardsigmoid(gm) -> int:
    """Replace every `aten.hardsigmoid` by add, hardtanh and mul nodes computing the same
    (torch's own definition: relu6(x + 3) / 6); return how many were replaced."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten.hardsigmoid.default:
            continue
        with gm.graph.inserting_before(node):
            shifted = gm.graph.call_function(aten.add.Tensor, (node.args[0], 3.0))
            clipped = gm.graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
            scaled = gm.graph.call_function(aten.mul.Tensor, (clipped, 1.0 / 6.0))
        # source_fn_stack is what litert-torch's annotators match on (get_source_partitions):
        # the entry `operator.add(x, 3)` and `operator.mul(y, 1/6)` would record under a
        # strict capture. nn_module_stack keeps module-name and module-type filters
        # (keep_float) applying to the new nodes as they did to the hard-sigmoid.
        for new, fn in ((shifted, operator.add), (clipped, F.hardtanh), (scaled, operator.mul)):
            new.meta.update({k: v for k, v in node.meta.items() if k in ("val", "nn_module_stack", "stack_trace")})
            new.meta["source_fn_stack"] = [*node.meta.get("source_fn_stack", [])[:-1], (new.name, fn)]
        node.replace_all_uses_with(scaled)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
