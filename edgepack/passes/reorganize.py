"""Structural reorganisation of the module tree for cheaper inference.

BatchNorm after a convolution or linear layer is folded into that layer's weight and
bias (a Conv/Linear module, or F.conv2d called by a Conv subclass on its own weight, as
same-padding convolutions do); Dropout becomes nn.Identity in place; submodules holding
parameters or buffers that no forward pass uses are deleted. Every decision is read from
a traced graph (torch.fx; torch.export where fx cannot trace), in eval and in training
mode, and from the modules a real forward pass calls: a module is deleted only when
nothing proves it used, a Dropout is replaced only where the graph calls it as a module,
and modules without tensors are never deleted (nothing to save, and code the trace could
not see may call them).

The edits are made on the original module tree, so the result stays plain torch.nn
modules that a state_dict and a list of edits describe. The result is then run against
the original on validation inputs: when it is off by more than the tolerance (or no
longer runs, in eval or training mode), each edit is replayed alone and those that break
parity are skipped and named in the report. Fusing the activation into the convolution
and folding constants happen later, inside each exporter's lowering (XNNPACK and LiteRT
fuse conv+relu; onnxslim folds constants in the ONNX graph).
"""

from __future__ import annotations

from pydantic import Field

from edgepack.errors import ToolchainError
from edgepack.passes import _inspect
from edgepack.passes.base import PassConfig, PassContext, PassResult

# Validation samples the result is compared on against the original.
CHECK_SAMPLES = 64
# Samples each edit is replayed on when the whole set fails: a broken edit changes nearly
# every output, and a model with fifty edits then replays in seconds, not minutes.
REPLAY_SAMPLES = 8
# A training-mode forward needs more than one value per BatchNorm channel.
TRAIN_SAMPLES = 2


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
        checker = _Checker(original, ctx, config.tolerance)
        check = checker.check
        count_before = _count(model)
        notes: list[str] = []
        eval_graph, why_not = _fx_graph(model, training=False)
        eval_calls = _called_names(model, check[:TRAIN_SAMPLES], training=False)
        edits: list[_Edit] = []
        if config.fold_batchnorm:
            if eval_graph is not None:
                edits += fold_batchnorms(model, eval_graph, example)
            else:
                notes.append(f"BatchNorm not folded: torch.fx could not trace the model ({why_not})")
        if config.remove_dropout:
            # Only a Dropout the forward calls as a module is proven to pass its input
            # through unchanged in eval; one it never calls may be used some other way.
            graph_calls = {n.target for n in eval_graph.nodes if n.op == "call_module"} if eval_graph else set()
            for name, m in list(model.named_modules()):
                if isinstance(m, nn.modules.dropout._DropoutNd) and (name in graph_calls or name in eval_calls):
                    edits.append(_Edit("dropout", name, nn.Identity()))
                    edits[-1].apply(model)
        if config.remove_dead_modules:
            used, why_not = _proven_uses(model, check[:TRAIN_SAMPLES], eval_graph)
            if used is None:
                notes.append(f"no module removed: {why_not}, so nothing proves a module unused")
            else:
                edits += _remove_dead(model, used | eval_calls)
        skipped: list[dict] = []
        problem = checker.problem(model)
        if problem is not None:
            ctx.progress(f"reorganize: {problem}; checking each of its {len(edits)} edits alone")
            model, edits, skipped = _replay(original, edits, checker)
            problem = checker.problem(model)
            if problem is not None:
                raise ToolchainError(f"reorganize: {problem} after its edits together, though none alone does; "
                                     "set fold_batchnorm, remove_dropout or remove_dead_modules = false for this "
                                     "model", stage="reorganize")
            notes += [f"kept as it was: {s['edit']}, which broke parity ({s['reason']})" for s in skipped]
        model.eval()
        report = {
            "modules_before": count_before,
            "modules_after": _count(model),
            "folded_batchnorm": [{"layer": e.layer, "batchnorm": e.name} for e in edits if e.kind == "batchnorm"],
            "removed_dropout": [e.name for e in edits if e.kind == "dropout"],
            "removed_dead": [e.name for e in edits if e.kind == "dead"],
            "skipped": skipped,
            "max_abs_output_change": checker.last_error,
            "params_after": _inspect.count_params(model),
            "notes": notes,
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


class _Checker:
    """Whether an edited model still computes what the original does: eval outputs on the
    check inputs within the tolerance and, when the original runs in training mode (a
    later fine-tuning stage needs it), a training-mode forward that still runs and gives
    outputs of the same shapes."""

    def __init__(self, original, ctx: PassContext, tolerance: float):
        import copy

        self.original = copy.deepcopy(original).eval()
        self.check, self.reference = _check_inputs(self.original, ctx)
        self.limit = _limit(self.reference, tolerance)
        self._references = {len(self.check): self.reference}
        self.last_error = 0.0  # of the last model checked on all the check inputs
        try:
            self.train_shapes = _train_shapes(self.original, self.check[:TRAIN_SAMPLES])
        except Exception:  # the model's own forward code: any type
            self.train_shapes = None  # it never ran in training mode: nothing to keep

    def problem(self, model, samples: int | None = None) -> str | None:
        """None when `model` passes, else what is wrong, in words."""
        import torch

        x = self.check if samples is None else self.check[:samples]
        if len(x) not in self._references:
            with torch.no_grad():
                self._references[len(x)] = self.original(x)
        try:
            with torch.no_grad():
                out = model.eval()(x)
        except Exception as e:  # the model's own forward code: any type
            return f"the model no longer runs ({type(e).__name__}: {_first_line(e)})"
        err = _difference(self._references[len(x)], out)
        if samples is None:
            self.last_error = err
        if err > self.limit:
            return f"outputs off by {err:.3g} (tolerance {self.limit:.3g})"
        if self.train_shapes is not None:
            try:
                shapes = _train_shapes(model, self.check[:TRAIN_SAMPLES])
            except Exception as e:  # the model's own forward code: any type
                return f"the model no longer runs in training mode ({type(e).__name__}: {_first_line(e)})"
            if shapes != self.train_shapes:
                return f"training-mode outputs changed shape {self.train_shapes} -> {shapes}"
        return None


def _check_inputs(model, ctx):
    """(inputs, outputs): CHECK_SAMPLES validation inputs, or as many as the deployed batch
    when the model takes no other batch size (a static program), and the model's outputs."""
    import torch

    x = torch.as_tensor(ctx.validation.x, dtype=torch.float32)
    reasons = []
    for n in dict.fromkeys((CHECK_SAMPLES, ctx.example.shape[0])):
        try:
            with torch.no_grad():
                return x[:n], model(x[:n])
        except Exception as e:  # the model's own forward code: any type
            reasons.append(f"batch {n}: {type(e).__name__}: {_first_line(e)}")
    raise ToolchainError(f"reorganize: the model does not run on validation inputs ({'; '.join(reasons)})",
                         stage="reorganize")


def _train_shapes(model, x) -> list[tuple[int, ...]]:
    """Output shapes of a training-mode forward, run on a copy so that BatchNorm's running
    statistics of `model` stay as they are."""
    import copy

    import torch

    with torch.no_grad():
        return [tuple(t.shape) for t in _tensors(copy.deepcopy(model).train()(x))]


def _replay(original, edits: list[_Edit], checker: _Checker):
    """Apply the edits one by one to a fresh copy, keeping those after which the model
    still passes the check: (model, kept edits, skipped edits with the reason)."""
    import copy

    model = copy.deepcopy(original).eval()
    kept, skipped = [], []
    for edit in edits:
        trial = copy.deepcopy(model)
        try:
            edit.apply(trial)
            problem = checker.problem(trial, REPLAY_SAMPLES)
        except Exception as e:  # an edit whose module a skipped one left in another place
            problem = f"{type(e).__name__}: {_first_line(e)}"
        if problem is None:
            model = trial
            kept.append(edit)
        else:
            skipped.append({"edit": str(edit), "reason": problem})
    return model, kept, skipped


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _called_names(model, x, *, training: bool) -> set[str]:
    """Every name of every module a real forward pass on `x` calls. Hooks see calls that a
    traced graph attributes to another name (one module registered under two names) or
    that a trace does not enter. Training mode runs on a copy (BatchNorm statistics)."""
    import copy

    import torch

    if training:
        model = copy.deepcopy(model)
    names_of = _names_of(model)
    ids, handles = set(), []
    for m in model.modules():
        if not isinstance(m, torch.jit.ScriptModule):  # they take no Python hooks
            handles.append(m.register_forward_pre_hook(lambda mod, args: ids.add(id(mod))))
    was_training = model.training
    try:
        with torch.no_grad():
            model.train(training)(x)
    except Exception:  # the model's own code; what did run is still evidence
        pass
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name for ident in ids for name in names_of.get(ident, [])}


def _names_of(model) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    return names


def _fx_graph(model, *, training: bool):
    """(the torch.fx graph of `model` in that mode, None) or (None, why not)."""
    import copy

    import torch.fx

    try:
        return torch.fx.symbolic_trace(copy.deepcopy(model).train(training)).graph, None
    except Exception as e:  # fx raises many types on data-dependent control flow
        return None, f"{type(e).__name__}: {_first_line(e)}"


def _export_uses(model, x, *, training: bool):
    """(names of the modules, parameters and buffers a torch.export graph of `model` uses,
    None) or (None, why not). torch.export traces forward code that fx cannot (shapes
    read from tensors, random masks in training mode)."""
    import copy

    import torch

    try:
        program = torch.export.export(copy.deepcopy(model).train(training), (x,), strict=False)
    except Exception as e:  # the model's own code or the exporter: any type
        return None, f"{type(e).__name__}: {_first_line(e)}"
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    used = set()
    for spec in program.graph_signature.input_specs:
        node = placeholders.get(getattr(spec.arg, "name", None))
        if spec.target is not None and node is not None and node.users:
            used.add(spec.target)
    # The innermost module each operation ran in; its ancestors are containers, and
    # counting them would keep every unused module beside it alive.
    for node in program.graph.nodes:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if stack:
            used.add(stack[-1][0])
    return used, None


def _proven_uses(model, x, eval_graph):
    """(every module, parameter and buffer name a traced forward uses in eval or in
    training mode, None), or (None, why not) when one mode could be traced neither by fx
    nor by torch.export: then nothing proves a module unused."""
    used: set[str] = set()
    for training in (False, True):
        graph, fx_why = (eval_graph, "") if not training and eval_graph is not None else _fx_graph(model, training=training)
        if graph is not None:
            used |= {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
            used |= _called_names(model, x, training=training)
            continue
        names, export_why = _export_uses(model, x, training=training)
        if names is None:
            mode = "training" if training else "eval"
            return None, f"in {mode} mode neither torch.fx ({fx_why}) nor torch.export ({export_why}) could trace the model"
        used |= names | _called_names(model, x, training=training)
    return used, None


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


def _count(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, m in model.named_modules():
        if not list(m.children()):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return dict(sorted(counts.items()))


def _set(model, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _conv_of(node, modules, graph):
    """The name of the convolution module whose own weight (and bias, if any) a
    functional conv node applies, when nothing else reads them: the call a Conv2d subclass
    makes in its forward (same-padding convolutions). None otherwise."""
    import torch
    import torch.fx
    from torch import nn

    if node.op != "call_function" or node.target not in (torch.conv1d, torch.conv2d, torch.conv3d):
        return None
    args = list(node.args) + [None] * 3
    weight = node.kwargs.get("weight", args[1])
    bias = node.kwargs.get("bias", args[2])
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target.endswith(".weight")):
        return None
    name = weight.target.rpartition(".")[0]
    layer = modules.get(name)
    if not isinstance(layer, nn.modules.conv._ConvNd) or isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return None
    if bias is None:
        if layer.bias is not None:
            return None
    elif not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr" and bias.target == f"{name}.bias"
              and len(bias.users) == 1):
        return None
    readers = [n for n in graph.nodes if (n.op == "get_attr" and n.target.startswith(name + "."))
               or (n.op == "call_module" and n.target == name)]
    # Exactly the weight (and bias) read once, by this call.
    if len(readers) != (1 if bias is None else 2) or len(weight.users) != 1:
        return None
    return name


def fold_batchnorms(model, graph, example) -> list[_Edit]:
    """Fold every BatchNorm whose only input is a Conv/Linear (module, or a conv module's
    own weight applied functionally) that nothing else reads."""
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
        if not (isinstance(src, torch.fx.Node) and len(src.users) == 1):
            continue
        # A BatchNorm called twice, or one without running statistics (it normalises with
        # batch statistics even in eval), cannot be folded into one set of weights.
        if calls[node.target] != 1 or not bn.track_running_stats or bn.running_mean is None:
            continue
        # Forward code that reads the BatchNorm's own tensors still needs them.
        if any(n.op == "get_attr" and n.target.startswith(node.target + ".") for n in graph.nodes):
            continue
        if src.op == "call_module":
            layer_name = src.target
            if calls[layer_name] != 1:  # a layer called twice would fold into both calls
                continue
        else:
            layer_name = _conv_of(src, modules, graph)
            if layer_name is None:
                continue
        layer = modules[layer_name]
        if isinstance(layer, nn.modules.conv._ConvNd):
            transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval(), transpose=transposed)
        elif isinstance(layer, nn.Linear) and out_dims.get(layer_name) == 2:
            # BatchNorm1d normalises dim 1; only on [N, C] outputs is that the Linear's features.
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        # Keep the fused tensors plain nn.Parameters with the layer's trainability.
        fused.weight.requires_grad_(layer.weight.requires_grad)
        edit = _Edit("batchnorm", node.target, nn.Identity(), layer=layer_name, fused=fused)
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


def _remove_dead(model, used: set[str]) -> list[_Edit]:
    """Delete submodules holding parameters or buffers that nothing in `used` (module,
    parameter and buffer names from traced graphs and real calls) reaches, under any of
    the names the module is registered as. A module without tensors is never deleted: it
    saves nothing, and code no trace saw may call it."""
    names_of = _names_of(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    used = set(used)
    for name in list(used):
        target = modules.get(name)
        if target is not None:
            used.update(names_of[id(target)])

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
