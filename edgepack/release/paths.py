"""Paths a manifest names, held inside the folder it describes.

The manifest model admits only relative paths without a '..' part; what it cannot see
is the folder itself: a dist whose digits.tflite or testdata/ is a symbolic link to a
file elsewhere would be read (profiled, or packaged into a release) as if it were the
build's. `inside` resolves the path, links and all, and refuses anything that ends up
outside the folder.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.errors import ConfigError


def inside(root: Path, rel: str, *, what: str) -> Path:
    """`root / rel` resolved, or ConfigError naming `what` when it is outside `root`."""
    base = root.resolve()
    path = (base / rel).resolve()
    if base not in path.parents:
        raise ConfigError(f"{what} {rel!r} resolves to {path}, outside {base}; refusing to open it "
                          "(a symbolic link out of the folder?)")
    return path
