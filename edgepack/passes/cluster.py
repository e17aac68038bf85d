"""Weight sharing: k-means clustering of each layer's weights, and tying identical layers.

Each Conv/Linear weight tensor is replaced by 2^bits shared values (Deep Compression, Han
et al. 2016): a small codebook plus a b-bit index per weight. The tensor stays float32
with the same shape, so every exporter handles it; the gain shows once the file is
compressed (zip) or entropy coded, both of which the report measures.
"""

from __future__ import annotations

import math
import zlib
from typing import Literal

from pydantic import Field

from edgepack.passes import _inspect
from edgepack.passes.base import PassContext, PassResult
from edgepack.passes.training import TrainingFields, require_training, torch_threads, train


class ClusterConfig(TrainingFields):
    bits: int = Field(4, ge=1, le=8, description="2^bits shared values per layer")
    init: Literal["linear", "density", "random"] = Field(
        "linear", description="centroid initialisation; linear over [min, max] worked best in Deep Compression")
    skip_layers: tuple[str, ...] = ()
    fine_tune_epochs: int = Field(0, ge=0, description="epochs fine-tuning the centroids, assignments fixed")
    tie_identical: bool = Field(False, description="layers with bit-identical weights share one Parameter")


class Cluster:
    name = "cluster"
    Config = ClusterConfig

    def run(self, model, config: ClusterConfig, ctx: PassContext) -> PassResult:
        import copy

        import torch

        if config.fine_tune_epochs:
            require_training(ctx, f"stage {self.name!r} (fine_tune_epochs={config.fine_tune_epochs})")
        _inspect.check_layer_names(model, config.skip_layers, "skip_layers")
        with torch_threads(ctx.threads):
            torch.manual_seed(ctx.seed)
            model = copy.deepcopy(model).eval()
            size_before = _sizes(model)
            tied = tie_identical_layers(model) if config.tie_identical else []
            layers = _unique_layers(model, set(config.skip_layers))
            codebooks = {}
            for i, (name, module) in enumerate(layers.items()):
                codebooks[name] = _cluster_weight(module.weight, 2 ** config.bits, config.init, ctx.seed + i)
            log = None
            if config.fine_tune_epochs:
                keep = _CentroidConstraint({layers[n].weight: cb[1] for n, cb in codebooks.items()})
                log = train(model, ctx.training, epochs=config.fine_tune_epochs, settings=config, seed=ctx.seed,
                            after_backward=keep.share_gradients, after_step=keep.snap,
                            progress=ctx.progress, label="cluster fine-tune")
            model.eval()
            per_layer = {}
            entropy_bits = 0.0
            for name, module in layers.items():
                w = module.weight.detach()
                index = codebooks[name][1]
                counts = torch.bincount(index.flatten(), minlength=2 ** config.bits).double()
                p = counts[counts > 0] / counts.sum()
                h = float(-(p * p.log2()).sum())
                n_unique = int(torch.unique(w).numel())
                # Index stream at its empirical entropy (what Huffman coding approaches) plus a
                # float32 codebook of the centroids actually used.
                layer_bits = h * w.numel() + 32 * n_unique
                entropy_bits += layer_bits
                per_layer[name] = {"weights": w.numel(), "unique_values": n_unique,
                                   "index_entropy_bits": round(h, 4),
                                   "entropy_coded_bytes": math.ceil(layer_bits / 8)}
            size_after = _sizes(model)
            clustered_ids = {id(m.weight) for m in layers.values()}
            # Everything not clustered (biases, BatchNorm, skipped layers) stays float32.
            rest_bytes = sum(t.numel() * t.element_size() for t in _unique_tensors(model)
                             if id(t) not in clustered_ids)
        report = {
            "bits": config.bits,
            "layers": per_layer,
            "tied": tied,
            "fp32_bytes_before": size_before["raw"], "fp32_bytes_after": size_after["raw"],
            "zlib_bytes_before": size_before["zlib"], "zlib_bytes_after": size_after["zlib"],
            "zlib_ratio": round(size_before["zlib"] / size_after["zlib"], 4),
            "entropy_coded_bytes": math.ceil(entropy_bits / 8) + rest_bytes,
            "entropy_coded_ratio": round(size_before["raw"] / (math.ceil(entropy_bits / 8) + rest_bytes), 4),
            "fine_tune": log.as_dict() if log else None,
        }
        return PassResult(model=model, report=report)


def tie_identical_layers(model) -> list[list[str]]:
    """Make Conv/Linear layers of the same kind whose weight (and bias) are bit-identical
    share one Parameter each. Returns the groups of tied layer names, first one kept."""
    import torch

    groups: dict[tuple, list[tuple[str, object]]] = {}
    for name, m in _inspect.weight_layers(model).items():
        bias = m.bias.detach() if m.bias is not None else None
        key = (type(m), tuple(m.weight.shape), None if bias is None else tuple(bias.shape))
        for other_name, other in groups.setdefault(key, []):
            same_bias = (bias is None) or torch.equal(bias, other.bias.detach())
            if other.weight is not m.weight and torch.equal(m.weight.detach(), other.weight.detach()) and same_bias:
                m.weight = other.weight
                if bias is not None:
                    m.bias = other.bias
                break
        groups[key].append((name, m))
    by_param: dict[int, list[str]] = {}
    for name, m in _inspect.weight_layers(model).items():
        by_param.setdefault(id(m.weight), []).append(name)
    return [names for names in by_param.values() if len(names) > 1]


def _unique_layers(model, skipped: set[str]) -> dict:
    """Layers to cluster, one per distinct weight Parameter (a tied weight is clustered once)."""
    seen, out = set(), {}
    for name, m in _inspect.weight_layers(model).items():
        if name in skipped or id(m.weight) in seen:
            continue
        seen.add(id(m.weight))
        out[name] = m
    return out


def _cluster_weight(weight, k: int, init: str, seed: int):
    """Replace `weight` in place by its k-means quantisation; return (centroids, index)."""
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    flat = weight.detach().double().flatten().numpy()
    values = np.unique(flat)
    if len(values) <= k:
        # Already at most k distinct values: they are the codebook, nothing to move.
        centroids = values
    else:
        if init == "linear":
            start = np.linspace(flat.min(), flat.max(), k)
        elif init == "density":
            start = np.quantile(flat, (np.arange(k) + 0.5) / k)
        else:
            start = np.random.default_rng(seed).choice(values, size=k, replace=False)
        start = np.unique(start)
        km = KMeans(n_clusters=len(start), init=start.reshape(-1, 1), n_init=1, random_state=seed)
        centroids = km.fit(flat.reshape(-1, 1)).cluster_centers_.ravel()
    centroids = np.sort(centroids)
    # Nearest centroid via the midpoints between sorted centroids: O(n log k) memory-light,
    # unlike an n x k distance matrix on a large layer.
    index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    with torch.no_grad():
        c = torch.as_tensor(centroids, dtype=weight.dtype)
        idx = torch.as_tensor(index, dtype=torch.long).view_as(weight)
        weight.copy_(c[idx])
    return c, idx


class _CentroidConstraint:
    """Fine-tuning of shared values with fixed assignments (Deep Compression, sec. 3.1):
    every weight of a cluster receives the cluster's summed gradient, so all move together;
    after each step the cluster is snapped to its mean to absorb rounding differences.
    Written here because torch offers no weight-sharing parametrisation with a codebook."""

    def __init__(self, assignments: dict):
        self.assignments = assignments  # Parameter -> index tensor of the same shape

    def share_gradients(self, model) -> None:
        import torch

        for w, idx in self.assignments.items():
            if w.grad is None:
                continue
            k = int(idx.max()) + 1
            summed = torch.zeros(k, dtype=w.grad.dtype).index_add_(0, idx.flatten(), w.grad.flatten())
            w.grad = summed[idx]

    def snap(self, model) -> None:
        import torch

        for w, idx in self.assignments.items():
            k = int(idx.max()) + 1
            flat = idx.flatten()
            sums = torch.zeros(k, dtype=w.dtype).index_add_(0, flat, w.detach().flatten())
            counts = torch.bincount(flat, minlength=k).clamp_min(1).to(w.dtype)
            w.copy_((sums / counts)[idx])


def _unique_tensors(model) -> list:
    seen, out = set(), []
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def _sizes(model) -> dict:
    """float32 bytes of the distinct tensors, and their zlib-compressed size (level 9), the
    size a zipped safetensors file approaches. Tied tensors count once."""
    tensors = _unique_tensors(model)
    blob = b"".join(t.detach().contiguous().numpy().tobytes() for t in tensors)
    return {"raw": len(blob), "zlib": len(zlib.compress(blob, 9))}
