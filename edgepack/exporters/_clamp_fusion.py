"""A convolution or linear layer followed by ReLU6 (or any hardtanh) quantized as one
int8 op, as both PT2E quantizers already do for ReLU.

torchao's XNNPACKQuantizer and litert-torch's PT2EQuantizer fuse only `relu` into the
convolution before it: its output is observed after the activation, and the runtime
applies the activation as the int8 kernel's output clamp. A ReLU6 (`hardtanh(x, 0, 6)`)
is annotated on its own instead, sharing its input's parameters, so the convolution's
raw output, which spans the pre-activation range (tens, both signs, in a BatchNorm-folded
layer), is quantized first and the clamp to [0, 6] then keeps a few dozen of its 256
levels. Both runtimes fuse a clamp into the convolution as they fuse a ReLU (XNNPACK's
FuseActivationPass takes hardtanh; LiteRT's converter writes a fused RELU6), so the
quantized pattern they expect is the same as for ReLU: int8 input and weights into the
convolution, the activation's output observed, nothing in between.

Measured on EfficientNet-Lite0 (ReLU6 after every expansion and depthwise convolution),
fake-quantized in torch on the zoo's evaluation photos: logit SNR 8.0 dB with the
quantizer's own annotation, 13.9 dB with ReLU written as ReLU then a clamp, 19.1 dB
with this pattern annotated as one op (docs/quantization.md).

Neither quantizer takes extra patterns (their pattern tables are module constants), so
the pattern is annotated here before their own annotators run; theirs skip nodes already
annotated.
"""

from __future__ import annotations

from typing import Callable


def _clamp_like(node) -> bool:
    import torch

    aten = torch.ops.aten
    return node.op == "call_function" and node.target in (
        aten.hardtanh.default, aten.hardtanh_.default, aten.relu6.default, aten.relu6_.default)


def _fusable_producer(node) -> bool:
    import torch

    aten = torch.ops.aten
    if node.op != "call_function":
        return False
    if node.target in (aten.conv1d.default, aten.conv2d.default, aten.linear.default):
        return True
    # aten.convolution: not transposed (args[6]); a transposed convolution's weights are
    # quantized per channel on another axis, which the quantizers' own patterns handle.
    return node.target == aten.convolution.default and len(node.args) > 6 and not node.args[6]


def annotate_conv_clamp(gm, config, utils, filter_fn: Callable | None = None) -> int:
    """Annotate every convolution/linear whose only user is a ReLU6/hardtanh: the layer's
    input activation, weight and bias as the quantizer would, its output left float, the
    activation's output with the config's output spec. `utils` is the quantizer's own
    utilities module (qspec getters and annotation markers); `filter_fn` the quantizer's
    node filter (keep_float). Returns how many patterns were annotated."""
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    if config is None or config.input_activation is None or config.input_activation.is_dynamic:
        return 0
    key = "quantization_annotation"
    count = 0
    for act in gm.graph.nodes:
        if not _clamp_like(act) or not isinstance(act.args[0], Node):
            continue
        layer = act.args[0]
        if not _fusable_producer(layer) or len(layer.users) != 1:
            continue
        x, weight = layer.args[0], layer.args[1]
        if not isinstance(x, Node) or not isinstance(weight, Node):
            continue
        inputs = {x: utils.get_input_act_qspec(config), weight: utils.get_weight_qspec(config)}
        partition = [act, layer, weight]
        bias = layer.args[2] if len(layer.args) > 2 else None
        if isinstance(bias, Node):
            inputs[bias] = utils.get_bias_qspec(config)
            partition.append(bias)
        if utils._is_annotated(partition):
            continue
        if filter_fn is not None and not all(filter_fn(n) for n in partition):
            continue
        layer.meta[key] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        act.meta[key] = QuantizationAnnotation(output_qspec=utils.get_output_act_qspec(config), _annotated=True)
        utils._mark_nodes_as_annotated(partition)
        count += 1
    return count
