"""The model as int8 would compute it, in torch, with every quantization point switchable.

Sensitivity analysis and the `keep_float = "auto"` search ask the same question many
times: what does the model output when these layers are int8 and those stay float?
Exporting and calibrating once per question costs minutes on a MobileNet-class net, so
the model is captured, annotated by torchao's PT2E `XNNPACKQuantizer` (what the
ExecuTorch exporter uses; litert-torch's quantizer is a fork of it with the same scheme),
calibrated once with the stage's observers, and converted. Each quantize/dequantize pair
of the converted graph then becomes one switch: on, it fake-quantizes with the calibrated
scale and zero point; off, it passes the float tensor through. Ranges are observed on
the float model, so they do not depend on which layers are quantized: one calibration
serves every combination.

Which switches a set of float layers turns off follows how `keep_float` reaches the
PT2E quantizers (`set_module_name(name, None)`): every node inside a float module loses
its annotation, and a tensor stays quantized when any node still annotated asks for it
(its producer's output, or one of its consumers' inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ATen ops that carry a layer's weights: the candidates for keeping in float.
_WEIGHTED = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "linear"}


@dataclass(frozen=True)
class Layer:
    """A module whose weights are quantized: its name (as `model.named_modules()` gives
    it, so it is a valid `keep_float` entry), its weight count and its multiply-accumulates
    per input sample."""

    name: str
    weights: int
    macs: int


def _switch_class():
    import torch

    class FakeQuantSwitch(torch.nn.Module):
        """One quantize/dequantize pair of the converted graph. A constant (a weight) is
        fake-quantized once; an activation on every call."""

        def __init__(self, quantize, dequantize, constant=None):
            super().__init__()
            self.quantize, self.dequantize, self.enabled = quantize, dequantize, True
            self.constant = constant
            self.rounded = None if constant is None else self._round(constant)

        def _round(self, x):
            return self.dequantize(self.quantize(x))

        def forward(self, x=None):
            if self.constant is not None:
                return self.rounded if self.enabled else self.constant
            return self._round(x) if self.enabled else x

    return FakeQuantSwitch


def _ops_name(target) -> str:
    """'quantize_per_tensor' of torch.ops.quantized_decomposed.quantize_per_tensor.default."""
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _module_names(node) -> list[str]:
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class SwitchableInt8:
    """A converted PT2E model whose quantization points are switched per layer."""

    def __init__(self, graph_module, switches: dict, layers: tuple[Layer, ...], owners: dict,
                 activations: dict | None = None):
        self._gm = graph_module
        self._switches = switches          # switch name -> FakeQuantSwitch
        self.layers = layers
        self._owners = owners              # switch name -> (producer, consumers) node facts
        # switch name -> (scale, zero point, quant_min, quant_max, Fingerprint | None) of the
        # per-tensor activations, in graph order: what range tuning may rescale.
        self.activations = activations or {}

    @property
    def graph_module(self):
        """The converted graph with its switches (range tuning runs parts of it)."""
        return self._gm

    def scale_range(self, switch: str, factor: float) -> None:
        """Quantize one activation with its calibrated range scaled by `factor` (its zero
        point kept), as exporters._tuned_ranges scales it in every format."""
        scale, zero, low, high, _ = self.activations[switch]
        self._switches[switch].quantize = _fake_quantize(scale * factor, zero, low, high)

    def set_float(self, names) -> None:
        """Every layer int8 except the modules in `names` (as `keep_float` would leave them)."""
        float_modules = set(names)
        for name, switch in self._switches.items():
            switch.enabled = self._quantized(name, lambda modules: bool(float_modules & set(modules)))

    def set_int8_only(self, names) -> None:
        """Only the modules in `names` int8 (their weights and the tensors they quantize),
        everything else float: the one-layer-at-a-time measure of sensitivity."""
        int8_modules = set(names)
        for name, switch in self._switches.items():
            switch.enabled = self._quantized(name, lambda modules: not (int8_modules & set(modules)))

    def enable_activations(self, names) -> None:
        """Every weight int8; the activations in `names` int8 and the others float (all of
        them int8 when `names` is None)."""
        for name, switch in self._switches.items():
            switch.enabled = switch.constant is not None or names is None or name in names

    def _quantized(self, switch: str, is_float) -> bool:
        askers = self._owners[switch]   # the module stacks of the annotated nodes that ask for this quantization
        return any(not is_float(modules) for modules in askers)

    def predict(self, x: np.ndarray, *, batch: int = 16) -> np.ndarray:
        import torch

        from edgepack.exporters._pt2e import as_tensor

        with torch.no_grad():
            return np.concatenate([self._gm(as_tensor(x[i : i + batch])).detach().numpy()
                                   for i in range(0, len(x), batch)])


def build(model, example: np.ndarray, calibration: np.ndarray, opts) -> SwitchableInt8:
    """Capture `model`, annotate with the XNNPACK quantizer (per-channel or per-tensor
    symmetric weights as `opts.weights` says, the stage's activation observer), calibrate
    on `calibration` and convert; then replace each quantize/dequantize pair by a switch."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgepack.exporters._observers import with_activation_observer
    from edgepack.exporters._pt2e import as_tensor, capture_for_calibration
    from edgepack.exporters._xnnpack_quantizer import quantizer as xnnpack_quantizer

    captured, batches = capture_for_calibration(model, (as_tensor(example),), (calibration,))
    quantizer = xnnpack_quantizer().set_global(with_activation_observer(
        get_symmetric_quantization_config(is_per_channel=opts.weights == "per_channel"), opts))
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for b in batches:   # each a tuple holding the one input's batch
            prepared(*b)
    fingerprints = _fingerprints(prepared)
    converted = convert_pt2e(prepared, fold_quantize=False)
    return _switched(converted, fingerprints)


def _fingerprints(prepared) -> dict:
    """The fingerprint of the tensor each observer of the calibrated graph saw, by the
    name of the node it observes (names survive convert_pt2e)."""
    out = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.args and hasattr(node.args[0], "name"):
            observer = getattr(prepared, node.target, None)
            if hasattr(observer, "fingerprint"):
                out[node.args[0].name] = observer.fingerprint()
    return out


def _fused_head(node):
    """The node whose annotation decides `node`'s: an op fused after another one (a ReLU
    after a convolution) is annotated with an output and no inputs, and the quantizer
    annotates or skips the pattern as a whole."""
    seen = 0
    while node is not None and seen < 8:
        ann = node.meta.get("quantization_annotation")
        if ann is None or ann.input_qspec_map or not node.args or not hasattr(node.args[0], "meta"):
            return node
        node, seen = node.args[0], seen + 1
    return node


def _askers(q, dequantizes) -> list[list[str]]:
    """The module stacks of the annotated nodes that quantize the tensor entering `q`: its
    producer when annotated for output, and each consumer annotated for that input."""
    producer = q.args[0]
    askers = []
    ann = producer.meta.get("quantization_annotation")
    if producer.op != "get_attr" and ann is not None and ann.output_qspec is not None:
        askers.append(_module_names(_fused_head(producer)))
    for dq in dequantizes:
        for user in dq.users:
            ann = user.meta.get("quantization_annotation")
            if ann is not None and producer in ann.input_qspec_map:
                askers.append(_module_names(user))
    return askers


def _switched(gm, fingerprints: dict | None = None) -> SwitchableInt8:
    import torch

    Switch = _switch_class()
    graph = gm.graph
    switches, owners, activations = {}, {}, {}
    layers = [_layer(gm, n) for n in graph.nodes if n.op == "call_function" and _ops_name(n.target) in _WEIGHTED]
    for node in list(graph.nodes):
        if node.op != "call_function" or not _ops_name(node.target).startswith("quantize_per_"):
            continue
        dequantizes = [u for u in node.users if _ops_name(u.target).startswith("dequantize_per_")]
        if not dequantizes or len(dequantizes) != len(node.users):
            continue
        q_args = [_attr(gm, a.target) if isinstance(a, torch.fx.Node) and a.op == "get_attr" else a for a in node.args[1:]]
        dq = dequantizes[0]
        dq_args = [_attr(gm, a.target) if isinstance(a, torch.fx.Node) and a.op == "get_attr" else a for a in dq.args[1:]]
        producer = node.args[0]
        constant = _attr(gm, producer.target).detach() if producer.op == "get_attr" else None
        name = f"int8_switch_{len(switches)}"
        fused = None if constant is not None else _fused_per_tensor(node, q_args)
        if fused is not None:
            switch = Switch(fused, _identity)
            activations[name] = (*(q_args[:4]), (fingerprints or {}).get(producer.name))
        else:
            switch = Switch(_bound(node.target, q_args, node.kwargs), _bound(dq.target, dq_args, dq.kwargs), constant)
        gm.add_module(name, switch)
        switches[name] = switch
        owners[name] = _askers(node, dequantizes)
        with graph.inserting_before(dequantizes[0]):
            new = graph.call_module(name, () if constant is not None else (producer,))
        for d in dequantizes:
            d.replace_all_uses_with(new)
            graph.erase_node(d)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    # One layer per module, in graph order (a module called twice is one keep_float entry).
    unique = {}
    for layer in layers:
        if layer.name and layer.name not in unique:
            unique[layer.name] = layer
    return SwitchableInt8(gm, switches, tuple(unique.values()), owners, activations)


def _identity(x):
    return x


def _fused_per_tensor(q, args):
    """torch's one-kernel fake quantization for a per-tensor activation with constant
    scale and zero point: the same arithmetic as the decomposed quantize/dequantize pair
    (round half to even of x / scale, plus the zero point, clamped), in one pass instead
    of five, which is what makes evaluating a MobileNet-class net per step cheap."""
    if _ops_name(q.target) != "quantize_per_tensor" or len(args) < 4 or q.kwargs:
        return None
    scale, zero, low, high = args[:4]
    if not all(isinstance(v, (int, float)) for v in (scale, zero, low, high)):
        return None
    return _fake_quantize(scale, zero, low, high)


def _fake_quantize(scale, zero, low, high):
    import torch

    def fake_quantize(x):
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero), int(low), int(high))

    return fake_quantize


def _bound(target, args, kwargs):
    def call(x):
        return target(x, *args, **kwargs)

    return call


def _layer(gm, node) -> Layer:
    """A weighted op's module, weight count and MACs per sample (from the traced shapes)."""
    names = _module_names(node)
    weight = node.args[1]
    while hasattr(weight, "op") and weight.op != "get_attr" and weight.args:   # through its dequantize/quantize
        weight = weight.args[0]
    w = _attr(gm, weight.target) if hasattr(weight, "op") and weight.op == "get_attr" else None
    weights = int(w.numel()) if w is not None else 0
    out = node.meta.get("val")
    macs = 0
    if w is not None and out is not None and len(out.shape) >= 2:
        per_output = weights // max(1, int(w.shape[0]))       # inputs (per group) x kernel taps
        macs = int(np.prod([int(s) for s in out.shape[1:]])) * per_output
        if _ops_name(node.target).startswith("conv_transpose"):
            macs = weights * int(np.prod([int(s) for s in node.args[0].meta["val"].shape[2:]]))
    return Layer(name=names[-1] if names else "", weights=weights, macs=macs)
