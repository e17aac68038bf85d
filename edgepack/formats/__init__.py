"""Export formats: one `Format` object per format (formats/<name>.py) and the registry of
the formats a build may name (formats/registry.py).

Importing this package loads no toolchain: a Format names its exporter steps and readers
lazily, so `edgepack --help` and config validation stay fast.
"""

from __future__ import annotations

from edgepack.formats.base import AdbTool, BenchmarkFigures, Format, lazy, tensor_io
from edgepack.formats.registry import FORMATS, Registry


def get_format(name: str) -> Format:
    """The registered format `name`; ConfigError listing the valid names otherwise."""
    return FORMATS.get(name)


__all__ = ["FORMATS", "AdbTool", "BenchmarkFigures", "Format", "Registry", "get_format", "lazy", "tensor_io"]
