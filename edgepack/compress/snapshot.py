"""Saving a compressed model without pickling it, and rebuilding it.

A stage's output is stored as a safetensors state dict plus a JSON list of edits to the
module tree of a freshly built model: modules resized by structured pruning, modules
replaced by nn.Identity (folded BatchNorm, removed Dropout) and parameters tied by weight
sharing. Replaying the edits on the factory's model and loading the state dict gives the
same model back. torch-pruning's own serializer pickles module __dict__s, and torch.save
pickles classes: neither is acceptable for files a later run reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edgepack.errors import EdgepackError

# Module types a snapshot can rebuild, and the constructor arguments that define them.
_REBUILDABLE = {
    "Conv1d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "padding_mode"),
    "Conv2d": ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "padding_mode"),
    "Linear": ("in_features", "out_features", "bias"),
    "BatchNorm1d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "BatchNorm2d": ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine"),
    "Identity": (),
}


class NotSnapshottable(EdgepackError):
    """The model holds a structure the snapshot format cannot describe (not cached)."""

    exit_code = 4


def _spec(module) -> dict:
    kind = type(module).__name__
    if kind not in _REBUILDABLE or type(module).__module__.split(".")[0] != "torch":
        return {"type": f"{type(module).__module__}.{type(module).__qualname__}"}
    spec = {"type": kind}
    for arg in _REBUILDABLE[kind]:
        value = getattr(module, arg, None)
        if arg == "bias":
            value = getattr(module, "bias", None) is not None
        elif arg == "elementwise_affine":
            value = module.weight is not None
        spec[arg] = list(value) if isinstance(value, tuple) else value
    return spec


def _build(spec: dict):
    from torch import nn

    kind = spec["type"]
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "type"}
    return getattr(nn, kind)(**args)


def _tied(model) -> list[list[str]]:
    """Groups of parameter names that share one tensor."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    return [names for names in owners.values() if len(names) > 1]


def _own_tensors(module) -> dict[str, tuple[int, ...]]:
    tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return {name: tuple(t.shape) for name, t in tensors if t is not None}


def describe_edits(model, fresh) -> list[dict]:
    """The edits that turn `fresh` (a newly built factory model) into `model`."""
    fresh_modules = dict(fresh.named_modules())
    edits = []
    for name, module in model.named_modules():
        if not name:
            continue
        before = fresh_modules.get(name)
        now = _spec(module)
        if before is not None and _spec(before) == now:
            # A module of the project's own class (a same-padding Conv2d subclass) is
            # rebuilt as the factory builds it: pruned or folded, its tensors no longer fit.
            if now["type"] not in _REBUILDABLE and _own_tensors(before) != _own_tensors(module):
                raise NotSnapshottable(f"module {name!r} is a {now['type']} whose tensors changed shape, "
                                       "which a snapshot cannot rebuild")
            continue
        if now["type"] not in _REBUILDABLE:
            raise NotSnapshottable(f"module {name!r} is a {now['type']}, which a snapshot cannot rebuild")
        edits.append({"module": name, **now})
    # A module deleted from the tree (dead code) holds no state; standing in an
    # nn.Identity at its place rebuilds the same computation.
    missing = set(fresh_modules) - {n for n, _ in model.named_modules()}
    for name in sorted(missing):
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if parent not in missing:
            edits.append({"module": name, "type": "Identity"})
    return edits


def apply_edits(model, edits: list[dict]) -> None:
    for edit in edits:
        parent_name, _, attr = edit["module"].rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _build({k: v for k, v in edit.items() if k != "module"}))


def save(model, fresh, folder: Path, meta: dict) -> None:
    """Write `model` as state.safetensors + structure.json into `folder` (which exists)."""
    from safetensors.torch import save_file

    edits = describe_edits(model, fresh)
    ties = _tied(model)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for group in ties:  # safetensors stores each tensor once; ties are re-made on load
        for name in group[1:]:
            state.pop(name, None)
    save_file(state, str(folder / "state.safetensors"))
    (folder / "structure.json").write_text(json.dumps({"edits": edits, "ties": ties, "meta": meta}, indent=1, sort_keys=True))


def load(folder: Path, build_fresh: Callable[[], object]):
    """Rebuild a model saved by `save` on top of a freshly built factory model."""
    from safetensors.torch import load_file

    doc = json.loads((folder / "structure.json").read_text())
    model = build_fresh()
    apply_edits(model, doc["edits"])
    state = load_file(str(folder / "state.safetensors"))
    for group in doc["ties"]:
        for name in group[1:]:
            state[name] = state[group[0]]
    model.load_state_dict(state, strict=True)
    for group in doc["ties"]:
        first_module, _, first_attr = group[0].rpartition(".")
        shared = getattr(model.get_submodule(first_module), first_attr)
        for name in group[1:]:
            mod, _, attr = name.rpartition(".")
            setattr(model.get_submodule(mod), attr, shared)
    return model.eval(), doc["meta"]
