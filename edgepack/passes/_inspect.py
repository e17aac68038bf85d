"""Facts about a module tree that several passes need: which layers exist, which one
produces the output, how large the model is."""

from __future__ import annotations

from edgepack.errors import ConfigError


def weight_layers(model) -> dict:
    """name -> module for every Conv*/Linear (the layers passes compress), in tree order."""
    from torch import nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def check_layer_names(model, names, field: str) -> None:
    known = dict(model.named_modules())
    unknown = [n for n in names if n not in known]
    if unknown:
        layers = ", ".join(list(weight_layers(model))[:12])
        raise ConfigError(f"{field}: no module named {', '.join(map(repr, unknown))} in the model; "
                          f"its Conv/Linear layers are: {layers}")


def output_layer(model, example) -> str | None:
    """Name of the last Conv/Linear the forward pass calls: the classifier in the models
    edgepack packages. Call order, not registration order, because a module's attributes
    may be declared in any order."""
    import torch

    layers = weight_layers(model)
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
               for name, m in layers.items()]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(example)
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return order[-1] if order else None


def count_params(model) -> int:
    # Tied parameters are one tensor in memory and in a deduplicated file: count them once.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def macs_and_params(model, example) -> tuple[int, int]:
    """The same MAC count as the stage table (devices.costs.count_macs), so a prune
    report and the table agree."""
    from edgepack.devices.costs import count_macs

    return int(count_macs(model, example)), count_params(model)


def param_shapes(model) -> dict[str, list[int]]:
    return {name: list(p.shape) for name, p in model.named_parameters()}


def example_tensor(ctx):
    """The example as torch tensors: one tensor, or a tuple for a model with several inputs
    (passes.training.forward feeds either)."""
    import torch

    if isinstance(ctx.example, tuple):
        from edgepack.modelio import to_torch

        return to_torch(ctx.example)
    return torch.as_tensor(ctx.example, dtype=torch.float32)
