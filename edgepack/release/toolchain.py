"""Versions of everything that shaped an artifact, for the manifest."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import edgepack

PACKAGES = (
    "torch", "executorch", "torchao", "litert-torch", "ai-edge-litert", "ai-edge-quantizer",
    "onnx", "onnxruntime", "onnxscript", "onnxslim", "torch-pruning", "numpy",
)


def toolchain_versions() -> dict[str, str]:
    versions = {"edgepack": edgepack.__version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
