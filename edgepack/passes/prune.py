"""Pruning: remove weights (unstructured) or whole channels (structured), then fine-tune.

Unstructured magnitude pruning zeroes the smallest weights; the tensor keeps its shape, so
the gain shows after compression (zip, entropy coding, sparse kernels). Structured pruning
removes output channels together with everything that depends on them (the next layer's
inputs, BatchNorm statistics, concatenations), found by torch-pruning's dependency graph,
so the result is a smaller dense model with fewer MACs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgepack.errors import ConfigError, ToolchainError
from edgepack.passes import _inspect
from edgepack.passes.base import PassContext, PassResult
from edgepack.passes.training import TrainingFields, accuracy, require_training, torch_threads, train


class PruneConfig(TrainingFields):
    method: Literal["unstructured", "structured"]
    ratio: float = Field(description="fraction removed: of weights (unstructured) or of each "
                                     "prunable layer's output channels (structured)")
    scope: Literal["global", "layer"] | None = Field(
        None, description="one threshold over all layers, or the same ratio per layer; "
                          "default global for unstructured, layer for structured")
    skip_layers: tuple[str, ...] = Field((), description="module names left untouched")
    skip_output_layer: bool = True
    round_to: int | None = Field(None, ge=1, description="structured: keep channel counts a "
                                                          "multiple of this (SIMD width)")
    fine_tune_epochs: int = Field(0, ge=0)

    @field_validator("ratio")
    @classmethod
    def _ratio_open_interval(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError("ratio must be strictly between 0 and 1 (the fraction removed)")
        return v

    @property
    def effective_scope(self) -> str:
        return self.scope or ("global" if self.method == "unstructured" else "layer")


class Prune:
    name = "prune"
    Config = PruneConfig

    def run(self, model, config: PruneConfig, ctx: PassContext) -> PassResult:
        import copy

        import torch

        if config.fine_tune_epochs:
            require_training(ctx, f"stage {self.name!r} (fine_tune_epochs={config.fine_tune_epochs})")
        _inspect.check_layer_names(model, config.skip_layers, "skip_layers")
        with torch_threads(ctx.threads):
            torch.manual_seed(ctx.seed)
            model = copy.deepcopy(model).eval()
            example = _inspect.example_tensor(ctx)
            skipped = set(config.skip_layers)
            out_layer = _inspect.output_layer(model, example)
            if config.skip_output_layer and out_layer is not None:
                skipped.add(out_layer)
            macs0, params0 = _inspect.macs_and_params(model, example)
            shapes0 = _inspect.param_shapes(model)
            with torch.no_grad():
                out0 = model(example)
            if config.method == "unstructured":
                targets = self._unstructured(model, config, skipped)
            else:
                targets = self._structured(model, config, skipped, example)
            try:
                with torch.no_grad():
                    out1 = model(example)
            except Exception as e:  # the model's own forward code: any type
                raise ToolchainError(
                    f"the {config.method}-pruned model no longer runs ({type(e).__name__}: {_first_line(e)}): its "
                    "forward code depends on a channel count the dependency graph cannot see (a reshape to a "
                    "fixed size, a hard-coded split); name the layers before it in skip_layers",
                    stage="prune") from e
            if tuple(out1.shape) != tuple(out0.shape):
                raise ToolchainError(f"pruning changed the output shape {tuple(out0.shape)} -> {tuple(out1.shape)}; "
                                     f"the output layer {out_layer!r} must be skipped", stage="prune")
            log = None
            # Right after pruning and before fine-tuning: tells a stage that lost accuracy
            # whether pruning or the fine-tuning lost it (compress.diagnose).
            accuracy_pruned = accuracy(model, ctx.validation) if config.fine_tune_epochs else None
            if config.fine_tune_epochs:
                log = train(model, ctx.training, epochs=config.fine_tune_epochs, settings=config,
                            seed=ctx.seed, progress=ctx.progress, label="prune fine-tune")
            if config.method == "unstructured":
                self._make_permanent(model, targets)
            model.eval()
            macs1, params1 = _inspect.macs_and_params(model, example)
            shapes1 = _inspect.param_shapes(model)
        report = {
            "method": config.method,
            "scope": config.effective_scope,
            "ratio": config.ratio,
            "skipped_layers": sorted(skipped),
            "params_before": params0, "params_after": params1,
            "macs_before": macs0, "macs_after": macs1,
            "sparsity": _sparsity(model, targets),
            "zeros_per_layer": _zeros(model, targets) if config.method == "unstructured" else None,
            "shapes_changed": {k: {"before": shapes0[k], "after": shapes1[k]}
                               for k in shapes0 if k in shapes1 and shapes0[k] != shapes1[k]},
            "fine_tune": log.as_dict() if log else None,
            "validation_accuracy_after_pruning": accuracy_pruned,
        }
        return PassResult(model=model, report=report)

    @staticmethod
    def _unstructured(model, config: PruneConfig, skipped: set[str]) -> list[str]:
        import torch.nn.utils.prune as tprune

        layers = {n: m for n, m in _inspect.weight_layers(model).items() if n not in skipped}
        if not layers:
            raise _nothing_to_prune(skipped)
        pairs = [(m, "weight") for m in layers.values()]
        if config.effective_scope == "global":
            tprune.global_unstructured(pairs, pruning_method=tprune.L1Unstructured, amount=config.ratio)
        else:
            for m, attr in pairs:
                tprune.l1_unstructured(m, attr, amount=config.ratio)
        return list(layers)

    @staticmethod
    def _make_permanent(model, targets: list[str]) -> None:
        # Masks stay as parametrizing hooks during fine-tuning so pruned weights get no
        # update; removing them afterwards leaves plain nn.Parameters holding the zeros.
        import torch.nn.utils.prune as tprune

        modules = dict(model.named_modules())
        for name in targets:
            tprune.remove(modules[name], "weight")

    @staticmethod
    def _structured(model, config: PruneConfig, skipped: set[str], example) -> list[str]:
        import torch_pruning as tp

        modules = dict(model.named_modules())
        layers = [n for n in _inspect.weight_layers(model) if n not in skipped]
        if not layers:
            raise _nothing_to_prune(skipped)
        try:
            pruner = tp.pruner.MetaPruner(
                model, example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=config.ratio,
                global_pruning=config.effective_scope == "global",
                # Global ranking may otherwise empty a whole layer; keep at least 10% of it.
                max_pruning_ratio=max(config.ratio, 0.9) if config.effective_scope == "global" else 1.0,
                ignored_layers=[modules[n] for n in skipped],
                round_to=config.round_to,
            )
            pruner.step()
        except Exception as e:  # torch-pruning tracing the project's model: any type
            raise ToolchainError(f"torch-pruning could not prune this model's channels ({type(e).__name__}: "
                                 f"{_first_line(e)}); name the layers it fails on in skip_layers, or use "
                                 "method = \"unstructured\"", stage="prune") from e
        return layers


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _nothing_to_prune(skipped):
    return ConfigError(f"prune: every Conv/Linear layer is skipped ({', '.join(sorted(skipped))}); "
                       "nothing left to prune")


def _sparsity(model, targets: list[str]) -> float:
    """Fraction of zeros over the weights of the layers that were pruned."""
    total = zeros = 0
    modules = dict(model.named_modules())
    for m in (modules[n] for n in targets):
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    return zeros / total if total else 0.0


def _zeros(model, targets: list[str]) -> dict[str, float]:
    modules = dict(model.named_modules())
    return {n: float((modules[n].weight == 0).float().mean()) for n in targets}
