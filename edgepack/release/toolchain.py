"""Versions of everything that shaped an artifact, for the manifest."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import edgepack

# What every build runs, whatever the formats: the source model, PT2E quantization,
# compression passes, arrays. Each format adds its own (edgepack.formats).
COMMON_PACKAGES = ("torch", "torchao", "torch-pruning", "numpy")
# The `keras` extra: what converts a Keras source; recorded where installed.
OPTIONAL_PACKAGES = ("tensorflow-cpu", "keras", "tf2onnx")


def packages() -> tuple[str, ...]:
    from edgepack.formats import FORMATS

    names = list(COMMON_PACKAGES)
    for fmt in FORMATS:
        names += [p for p in fmt.toolchain if p not in names]
    return tuple(names)


def toolchain_versions() -> dict[str, str]:
    versions = {"edgepack": edgepack.__version__, "python": platform.python_version()}
    for name in packages():
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    for name in OPTIONAL_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    from edgepack.determinism import float_kernels

    versions["float_kernels"] = float_kernels()
    return versions
