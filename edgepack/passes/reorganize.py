"""Structural reorganisation of the module tree for cheaper inference.

BatchNorm after a Conv/Linear is folded into that layer's weight and bias; Dropout becomes
nn.Identity in place; submodules holding parameters or buffers that no forward pass uses
are deleted. The graph is read with torch.fx, but the edits are made on the original
module tree, so the result stays plain torch.nn modules that a state_dict and a list of
edits describe. Fusing the activation into the convolution and folding constants happen
later, inside each exporter's lowering (XNNPACK and LiteRT fuse conv+relu; onnxslim folds
constants in the ONNX graph).
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
    tolerance: float = Field(1e-5, gt=0, description="largest output change accepted (max abs, relative to the "
                                                     "largest output magnitude when that exceeds 1)")


class Reorganize:
    name = "reorganize"
    Config = ReorganizeConfig

    def run(self, model, config: ReorganizeConfig, ctx: PassContext) -> PassResult:
        import copy

        import torch
        from torch import nn

        torch.manual_seed(ctx.seed)
        original = model
        model = copy.deepcopy(model).eval()
        example = _inspect.example_tensor(ctx)
        check = torch.as_tensor(ctx.validation.x[:64], dtype=torch.float32)
        with torch.no_grad(), _CallRecorder(model) as called:
            reference = model(check)
        count_before = _count(model)
        edits: list[_Edit] = []
        graphs = []
        if config.fold_batchnorm or config.remove_dead_modules:
            graphs.append(_trace(model))
            # A module reached only in training mode (an auxiliary head) is kept, so a later
            # fine-tuning stage can still run the model in train mode.
            model.train()
            graphs.append(_trace(model))
            model.eval()
        if config.fold_batchnorm:
            edits += fold_batchnorms(model, graphs[0], example)
        if config.remove_dropout:
            for name, m in list(model.named_modules()):
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    edits.append(_Edit("dropout", name, nn.Identity()))
                    _set(model, name, edits[-1].replacement)
        if config.remove_dead_modules:
            edits += _remove_dead(model, graphs, called.ids)
        model.eval()
        removed = [e.name for e in edits if e.kind == "dead"]
        try:
            with torch.no_grad():
                out = model(check)
        except Exception as e:  # the model's own forward code: any type
            raise ToolchainError(f"reorganize: the model no longer runs after removing {', '.join(removed)} "
                                 f"({type(e).__name__}: {e}); set remove_dead_modules = false for this model",
                                 stage="reorganize") from e
        err, limit = _difference(reference, out), _limit(reference, config.tolerance)
        if err > limit:
            culprit = _first_edit_past(original, edits, check, reference, limit)
            raise ToolchainError(f"reorganize changed the outputs by up to {err:.3g} (tolerance {limit:.3g}); "
                                 f"the first edit past it: {culprit}", stage="reorganize")
        report = {
            "modules_before": count_before,
            "modules_after": _count(model),
            "folded_batchnorm": [{"layer": e.layer, "batchnorm": e.name} for e in edits if e.kind == "batchnorm"],
            "removed_dropout": [e.name for e in edits if e.kind == "dropout"],
            "removed_dead": removed,
            "max_abs_output_change": err,
            "params_after": _inspect.count_params(model),
        }
        return PassResult(model=model, report=report)


class _Edit:
    """One change to the module tree: `replacement` set at `name` (for a folded BatchNorm,
    the fused layer goes to `layer` and an Identity to `name`), or `name` deleted."""

    def __init__(self, kind: str, name: str, replacement=None, *, layer: str | None = None, fused=None):
        self.kind, self.name, self.replacement, self.layer, self.fused = kind, name, replacement, layer, fused

    def apply(self, model) -> None:
        if self.kind == "dead":
            parent, _, attr = self.name.rpartition(".")
            delattr(model.get_submodule(parent) if parent else model, attr)
            return
        if self.kind == "batchnorm":
            _set(model, self.layer, self.fused)
        _set(model, self.name, self.replacement)

    def __str__(self) -> str:
        return {"batchnorm": f"folding BatchNorm '{self.name}' into '{self.layer}'",
                "dropout": f"replacing Dropout '{self.name}' by Identity",
                "dead": f"removing unused module '{self.name}'"}[self.kind]


class _CallRecorder:
    """The id of every module a forward pass calls. Hooks see calls that a traced graph
    can attribute to another name (one module registered under two names) or that fx
    does not trace into."""

    def __init__(self, model):
        self.model, self.ids, self.handles = model, set(), []

    def __enter__(self):
        import torch

        for m in self.model.modules():
            if not isinstance(m, torch.jit.ScriptModule):  # they take no Python hooks
                self.handles.append(m.register_forward_pre_hook(lambda mod, args: self.ids.add(id(mod))))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _tensors(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in _tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _difference(reference, out) -> float:
    a, b = _tensors(reference), _tensors(out)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(a, b) if x.numel()), default=0.0)


def _limit(reference, tolerance: float) -> float:
    # Folding rounds each weight once; on logits of magnitude 30 that is a larger absolute
    # change than on probabilities, so the tolerance scales with outputs larger than 1.
    scale = max((float(t.float().abs().max()) for t in _tensors(reference) if t.numel()), default=0.0)
    return tolerance * max(1.0, scale)


def _first_edit_past(original, edits, check, reference, limit) -> str:
    """Replay the edits one by one on a fresh copy and name the first that breaks parity."""
    import copy

    import torch

    model = copy.deepcopy(original).eval()
    with torch.no_grad():
        for edit in edits:
            edit.apply(model)
            try:
                err = _difference(reference, model(check))
            except Exception as e:  # the model's own forward code: any type
                return f"{edit} ({type(e).__name__}: {e})"
            if err > limit:
                return f"{edit} (outputs off by {err:.3g})"
    return "none alone; their combination"


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


def fold_batchnorms(model, graph, example) -> list[_Edit]:
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
        edit = _Edit("batchnorm", node.target, nn.Identity(), layer=src.target, fused=fused)
        edit.apply(model)
        folded.append(edit)
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


def _remove_dead(model, graphs, called: set[int]) -> list[_Edit]:
    """Delete submodules holding parameters or buffers that no forward pass uses: not
    called on the check batch, and neither called nor read in the traced eval and train
    graphs, under any of the names the module is registered as. A module without tensors
    is never deleted: it saves nothing, and code the example did not reach may call it."""
    names_of: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(m), []).append(name)
    used: set[str] = set()
    for graph in graphs:
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                used.add(node.target)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name in list(used):
        target = modules.get(name)
        if target is not None:
            used.update(names_of[id(target)])
    for ident in called:
        used.update(names_of.get(ident, []))

    # A used name keeps its ancestors (containers) and its descendants (a called module's
    # own children run inside it; fx does not trace into leaf modules).
    def alive(name: str) -> bool:
        return any(u == name or u.startswith(name + ".") or name.startswith(u + ".") for u in used)

    def holds_tensors(m) -> bool:
        return any(True for _ in m.parameters()) or any(True for _ in m.buffers())

    dead = [name for name, m in model.named_modules()
            if name and holds_tensors(m) and not any(alive(n) for n in names_of[id(m)])]
    # Delete outermost first; their children go with them.
    removed: list[_Edit] = []
    for name in dead:
        if any(name.startswith(r.name + ".") for r in removed):
            continue
        removed.append(_Edit("dead", name))
        removed[-1].apply(model)
    return removed
