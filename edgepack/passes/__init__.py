"""Compression passes and their registry.

Importing this package loads only pydantic: every pass imports torch inside `run`, so
`edgepack --help` and config validation stay fast. The registry is an explicit, read-only
mapping built here; nothing registers itself on import.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from edgepack.errors import ConfigError
from edgepack.passes.base import Dataset, Pass, PassConfig, PassContext, PassResult
from edgepack.passes.cluster import Cluster
from edgepack.passes.distill import Distill
from edgepack.passes.prune import Prune
from edgepack.passes.reorganize import Reorganize


def build_registry(*passes: type) -> Mapping[str, type]:
    registry: dict[str, type] = {}
    for p in passes:
        if p.name in registry:
            raise ValueError(f"pass name {p.name!r} registered twice ({registry[p.name].__name__}, {p.__name__})")
        registry[p.name] = p
    return MappingProxyType(registry)


PASSES: Mapping[str, type] = build_registry(Prune, Distill, Cluster, Reorganize)


def get_pass(name: str) -> type:
    try:
        return PASSES[name]
    except KeyError:
        raise ConfigError(f"unknown pass {name!r}; valid passes: {', '.join(sorted(PASSES))}") from None


__all__ = ["PASSES", "Pass", "PassConfig", "PassContext", "PassResult", "Dataset", "build_registry", "get_pass",
           "Prune", "Distill", "Cluster", "Reorganize"]
