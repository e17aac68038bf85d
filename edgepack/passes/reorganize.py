"""Structural reorganisation of the module tree for cheaper inference.

BatchNorm after a Conv/Linear is folded into that layer's weight and bias; Dropout becomes
nn.Identity; modules the forward pass never reaches are deleted. The graph is read with
torch.fx, but the edits are made on the original module tree, so the result stays plain
torch.nn modules that a state_dict and a list of edits describe. Fusing the activation
into the convolution and folding constants happen later, inside each exporter's lowering
(XNNPACK and LiteRT fuse conv+relu; onnxslim folds constants in the ONNX graph).
"""

from __future__ import annotations

from pydantic import Field

from edgepack.errors import ToolchainError
from edgepack.passes import _inspect
from edgepack.passes.base import PassConfig, PassContext, PassResult


class ReorganizeConfig(PassConfig):
    fold_batchnorm: bool = True
    remove_dropout: bool = True
    remove_dead_modules: bool = True
    tolerance: float = Field(1e-5, gt=0, description="largest output change accepted (max abs)")


class Reorganize:
    name = "reorganize"
    Config = ReorganizeConfig

    def run(self, model, config: ReorganizeConfig, ctx: PassContext) -> PassResult:
        import copy

        import torch
        from torch import nn

        torch.manual_seed(ctx.seed)
        model = copy.deepcopy(model).eval()
        example = _inspect.example_tensor(ctx)
        check = torch.as_tensor(ctx.validation.x[:64], dtype=torch.float32)
        with torch.no_grad():
            reference = model(check)
        count_before = _count(model)
        folded, dropped, dead = [], [], []
        if config.fold_batchnorm or config.remove_dead_modules:
            graph = _trace(model)
            # A module reached only in training mode (an auxiliary head) is kept, so a later
            # fine-tuning stage can still run the model in train mode.
            model.train()
            train_graph = _trace(model)
            model.eval()
        if config.fold_batchnorm:
            folded = _fold_batchnorms(model, graph, example)
        if config.remove_dropout:
            for name, m in list(model.named_modules()):
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    _set(model, name, nn.Identity())
                    dropped.append(name)
        if config.remove_dead_modules:
            dead = _remove_dead(model, [graph, train_graph])
        model.eval()
        with torch.no_grad():
            out = model(check)
        err = float((out - reference).abs().max())
        if err > config.tolerance:
            raise ToolchainError(f"reorganize changed the outputs by up to {err:.3g} (tolerance {config.tolerance:g})",
                                 stage="reorganize")
        report = {
            "modules_before": count_before,
            "modules_after": _count(model),
            "folded_batchnorm": [{"layer": a, "batchnorm": b} for a, b in folded],
            "removed_dropout": dropped,
            "removed_dead": dead,
            "max_abs_output_change": err,
            "params_after": _inspect.count_params(model),
        }
        return PassResult(model=model, report=report)


def _count(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, m in model.named_modules():
        if not list(m.children()):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return dict(sorted(counts.items()))


def _trace(model):
    import torch.fx

    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception as e:  # fx raises many types on data-dependent control flow
        raise ToolchainError(f"reorganize could not trace the model with torch.fx ({type(e).__name__}: {e}); "
                             "set fold_batchnorm = false and remove_dead_modules = false for this model",
                             stage="reorganize") from e


def _set(model, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _fold_batchnorms(model, graph, example) -> list[tuple[str, str]]:
    """Fold every BatchNorm whose only input is a Conv/Linear that nothing else reads."""
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out_dims = _output_dims(model, example)
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        bn = modules[node.target]
        src = node.args[0] if node.args else None
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        layer = modules[src.target]
        # A module called twice, or a BatchNorm without running statistics (it normalises
        # with batch statistics even in eval), cannot be folded into one set of weights.
        if calls[src.target] != 1 or calls[node.target] != 1 or not bn.track_running_stats or bn.running_mean is None:
            continue
        if isinstance(layer, nn.modules.conv._ConvNd):
            transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval(), transpose=transposed)
        elif isinstance(layer, nn.Linear) and out_dims.get(src.target) == 2:
            # BatchNorm1d normalises dim 1; only on [N, C] outputs is that the Linear's features.
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        # Keep the fused tensors plain nn.Parameters with the layer's trainability.
        fused.weight.requires_grad_(layer.weight.requires_grad)
        _set(model, src.target, fused)
        _set(model, node.target, nn.Identity())
        folded.append((src.target, node.target))
    return folded


def _output_dims(model, example) -> dict[str, int]:
    import torch
    from torch import nn

    dims, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(lambda mod, i, o, name=name: dims.__setitem__(name, o.dim())))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return dims


def _remove_dead(model, graphs) -> list[str]:
    """Delete submodules the traced forward never calls and whose tensors it never reads."""
    used: set[str] = set()
    for graph in graphs:
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                used.add(node.target)
    # A used name keeps its ancestors (containers) and its descendants (a called module's
    # own children run inside it; fx does not trace into leaf modules).
    def alive(name: str) -> bool:
        return any(u == name or u.startswith(name + ".") or name.startswith(u + ".") for u in used)

    dead = [name for name, _ in model.named_modules() if name and not alive(name)]
    # Delete outermost first; their children go with them.
    removed = []
    for name in dead:
        if any(name.startswith(r + ".") for r in removed):
            continue
        parent, _, attr = name.rpartition(".")
        delattr(model.get_submodule(parent) if parent else model, attr)
        removed.append(name)
    return removed
