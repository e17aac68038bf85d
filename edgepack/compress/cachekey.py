"""What a compression stage's output depends on, hashed by content.

A stage is reused from the cache only when everything that shaped its output is the
same: the model it started from, the pass and its config, the data, the seed and thread
count, the code that builds every model it touches, the weights files it reads, and the
versions of the libraries that compute it. Paths alone are never enough: a file edited in
place keeps its name.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

# The distributions whose code computes a stage's output: torch runs every pass and
# training loop, torch-pruning builds the dependency graph of structured pruning (and
# counts MACs), scikit-learn's k-means clusters weights, numpy carries the data and
# safetensors stores and reads the snapshots. One set for every stage keeps the key
# simple; upgrading one of them costs a recomputation, never a wrong reuse.
TOOLS = ("edgepack", "torch", "torch-pruning", "scikit-learn", "numpy", "safetensors")

# Folders under a project that hold no source of the model: hidden ones (the stage cache,
# .git, .venv), Python's byte-code caches and build output.
_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages"}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    # The float kernels shape trained weights and observed ranges as much as a version.
    from edgepack.determinism import float_kernels

    versions["float_kernels"] = float_kernels()
    return versions


def _source_files(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts[:-1]
        if any(p.startswith(".") or p in _SKIPPED_DIRS for p in parts):
            continue
        if any((folder.joinpath(*parts[: i + 1]) / "pyvenv.cfg").is_file() for i in range(len(parts))):
            continue
        out.append(path)
    return out


def code_digest(project_dir: Path, factory: str) -> dict[str, str]:
    """sha256 of every .py file under the folder of a `file.py:function` factory, by path
    relative to that folder.

    Not only the factory's own file: a project's model code imports its siblings
    (`from layers import Block`; the loader puts the file's folder on sys.path, see
    sources.hooks), and which of them a factory reaches cannot be known without running
    it. Hashing every Python file of the folder is sound (an edited helper misses the
    cache) at the price of a recomputation when an unrelated script there changes.
    Installed packages are covered by `tool_versions`, not here."""
    file = (Path(project_dir) / factory.rsplit(":", 1)[0]).resolve()
    folder = file.parent
    if not file.is_file():
        return {factory: "missing"}
    return {str(p.relative_to(folder)): file_digest(p) for p in _source_files(folder)}


def files_digest(project_dir: Path, refs: tuple[str, ...]) -> dict[str, str]:
    """Content hashes of the files a stage's config names (factories and weights), by the
    name the config gives them. A factory reference hashes its folder's code."""
    out = {}
    for ref in sorted(set(refs)):
        if ref.endswith(".py") or (":" in ref and ref.rsplit(":", 1)[0].endswith(".py")):
            code = code_digest(project_dir, ref)
            out[ref] = hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()
        else:
            path = Path(project_dir) / ref
            out[ref] = file_digest(path) if path.is_file() else "missing"
    return out


def source_key(weights_key: str, *, project_dir: Path, factory: str | None) -> str:
    """The key of the source model: its weights (or .pt2 program) and, for a factory, the
    code that builds it, since a cached stage is rebuilt on the factory's model."""
    doc = {"weights": weights_key, "code": code_digest(project_dir, factory) if factory else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def stage_key(parent_key: str, *, pass_name: str, config: dict, files: dict[str, str], data_digest: str,
              seed: int, threads: int, example_shape: tuple[int, ...], tools: dict) -> str:
    """The key of one stage's output. `threads` is part of it because intra-op threads
    change the order of float reductions, so training on another count gives other weights."""
    doc = {"parent": parent_key, "pass": pass_name, "config": config, "files": files, "data": data_digest,
           "seed": seed, "threads": threads, "example_shape": list(example_shape), "tools": tools}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
