"""litert-torch's PT2E quantizer, with the mobile ops it leaves float made quantizable:
hard-sigmoid, PReLU, F.relu6 and softmax. Each is rewritten in the quantizer's own hook
for graph rewrites (`transform_for_annotation`), into ops litert-torch annotates (or,
for PReLU, that this quantizer annotates itself); each function below says why.

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

import functools
import operator


def quantizer():
    """A `PT2EQuantizer` whose graphs have hard-sigmoid spelt in ops it annotates."""
    import torch
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    from edgepack.exporters._clamp_fusion import annotate_conv_clamp

    class _Quantizer(PT2EQuantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            decompose_hardsigmoid(model)
            relu6_as_hardtanh(model)
            decompose_prelu(model)
            softmax_as_annotated_op(model)
            return super().transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotate_conv_clamp(model, self.global_config, utils)
            model = super().annotate(model)
            config = self.global_config
            if config is not None and config.input_activation is not None:
                annotate_decomposed_prelu(model, config)
            return model

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


PRELU_PART = "edgepack_prelu"


def decompose_prelu(gm) -> int:
    """Replace every `aten.prelu` by mul, relu, mul and add nodes computing the same,
    prelu(x) = x + (1 - w) * relu(-x), tagged for `annotate_decomposed_prelu`.

    litert-torch lowers PReLU as RELU, MUL and SUB of its own (a form the GPU delegate
    takes), after quantization: those ops get no quantization parameters and run in
    float32 (MTCNN's nets: a float MUL, RELU and SUB per PReLU). Decomposed before
    annotation, each op is annotated and lowered as an int8 kernel. The ReLU reads -x,
    never x itself: a ReLU right after a convolution is fused with it by litert-torch's
    conv + ReLU annotator, which would leave the convolution's own output unquantized."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != aten.prelu.default:
            continue
        x, weight = node.args
        if weight.op != "get_attr" or "val" not in x.meta:
            continue
        w = functools.reduce(getattr, weight.target.split("."), gm).detach()
        rank = x.meta["val"].dim()
        # the slope broadcast over the channel dim (dim 1), as PReLU applies it
        shape = [1, w.numel()] + [1] * (rank - 2) if w.numel() > 1 and rank >= 2 else [w.numel()]
        name = f"_edgepack_prelu_complement_{count}"
        gm.register_buffer(name, (1.0 - w).reshape(shape).contiguous())
        with gm.graph.inserting_before(node):
            complement = gm.graph.get_attr(name)
            negated = gm.graph.call_function(aten.mul.Tensor, (x, -1.0))
            clipped = gm.graph.call_function(aten.relu.default, (negated,))
            scaled = gm.graph.call_function(aten.mul.Tensor, (clipped, complement))
            out = gm.graph.call_function(aten.add.Tensor, (x, scaled))
        complement.meta["val"] = getattr(gm, name)
        for new in (negated, clipped, scaled, out):
            new.meta.update({k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace", "val")})
            new.meta[PRELU_PART] = True
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return count


def relu6_as_hardtanh(gm) -> int:
    """`aten.relu6` (what `F.relu6` captures as) as `aten.hardtanh(x, 0, 6)` (what
    `nn.ReLU6`, a Hardtanh, captures as): the same function, but only hardtanh is among
    the ops litert-torch's annotation propagation gives its input's parameters. Left as
    relu6 after a convolution it stays float, and so does what reads it (EfficientNet-Lite's
    head: a float RELU6, MEAN and TRANSPOSE before the classifier)."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in (aten.relu6.default, aten.relu6_.default):
            node.target, node.args = aten.hardtanh.default, (node.args[0], 0.0, 6.0)
            count += 1
    if count:
        gm.recompile()
    return count


def softmax_as_annotated_op(gm) -> int:
    """`aten.softmax.int` as `aten._softmax`: litert-torch's fixed-parameter annotator
    (int8 SOFTMAX, output scale 1/256) matches only the latter, which a capture that
    keeps `F.softmax` whole does not write."""
    import torch

    aten = torch.ops.aten
    count = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.softmax.int and len(node.args) >= 2 \
                and node.kwargs.get("dtype", node.args[2] if len(node.args) > 2 else None) is None:
            node.target, node.args, node.kwargs = aten._softmax.default, (node.args[0], node.args[1], False), {}
            count += 1
    if count:
        gm.recompile()
    return count


def annotate_decomposed_prelu(gm, config) -> None:
    """Quantization annotations for the nodes `decompose_prelu` wrote: every input and
    output int8 with the configuration's activation spec (the slope too: a static int8
    MUL takes two int8 tensors), unless an annotator already took them."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    act = config.input_activation
    out_act = config.output_activation or act
    for node in gm.graph.nodes:
        if not node.meta.get(PRELU_PART):
            continue
        existing = node.meta.get("quantization_annotation")
        if existing is not None and existing._annotated:
            continue
        inputs = {a: act for a in node.args if hasattr(a, "op")}
        node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=out_act,
                                                                      _annotated=True)

