"""Exports reused across builds, keyed by everything that shapes the file's bytes.

A LiteRT int8 conversion of a MobileNet-class net takes minutes; building a second target
that lists the same artifact, or building again after changing only a budget, must not
redo it. The key hashes content, never paths: the exported model's weights and structure,
the code that builds it, the format, precision, dynamic dims and quantization options,
the calibration inputs, the input/output names and shape, edgepack's own code and the versions of every
package that converts or quantizes (with how the host's float kernels were chosen). An
entry holds the file and what the exporter reported; on reuse the file's sha256 is
checked against the one stored, so a damaged entry is rebuilt, never shipped.

Only exports are reused. Verification, measurement and gates run on every build, since
they are what the build's verdict rests on and they read the build's own data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

ENTRY_SCHEMA = "edgepack.export-cache/1"


def _model_digest(model) -> str:
    """Weights, buffers and module structure of a torch module (or a program's module);
    a Keras or ONNX source's own digest (its file's bytes)."""
    from edgepack.sources.foreign import is_foreign

    if is_foreign(model):
        return model.digest()
    import torch

    h = hashlib.sha256(repr(model).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype}:{a.shape}".encode() + a.tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _edgepack_code() -> str:
    """edgepack's own source: an exporter or quantizer edited in a checkout changes the
    bytes without changing the package version."""
    import edgepack

    root = Path(edgepack.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def export_cache_key(plan, loaded, key, *, model, file_name: str, dims: tuple) -> str | None:
    """The entry's key, or None when the model's state cannot be hashed as bytes (a
    tensor type without a byte view): such a model is exported every time."""
    try:
        model_digest = _model_digest(model)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return None
    from edgepack.compress import cachekey
    from edgepack.release.toolchain import toolchain_versions

    project = plan.project
    doc = {
        "schema": ENTRY_SCHEMA,
        "source": cachekey.source_key(loaded.source.sha256, project_dir=plan.project_dir,
                                      factory=project.model.factory or project.model.custom_objects),
        "model": model_digest,
        "format": key.format,
        "precision": key.precision,
        "export_key": repr(key),
        "dims": [repr(d) for d in dims],
        "quantize": plan.recipe.quantize.model_dump(mode="json") if plan.recipe.quantize is not None else None,
        "calibration": [_array_digest(a) for a in loaded.calibration_x],
        "input": [[s.name, list(s.shape), s.dtype] for s in project.model.input_specs],
        "output": list(project.model.output_names),
        "file_name": file_name,
        "tools": toolchain_versions(),
        "edgepack_code": _edgepack_code(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def cache_folder(plan) -> Path:
    return plan.project_dir / plan.project.compress.cache_dir / "exports"


def lookup(folder: Path, cache_key: str, out_path: Path):
    """The cached exporters.ModelArtifact copied to `out_path`, or None."""
    from edgepack.exporters import ModelArtifact
    from edgepack.compress.cachekey import file_digest

    entry = folder / cache_key[:40]
    meta_file = entry / "artifact.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
        stored = entry / meta["file"]
        if meta.get("schema") != ENTRY_SCHEMA or meta.get("key") != cache_key or file_digest(stored) != meta["sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    shutil.copyfile(stored, out_path)
    return ModelArtifact(path=out_path, format=meta["format"], precision=meta["precision"], sha256=meta["sha256"],
                         size_bytes=meta["size_bytes"], parent_sha256=meta["parent_sha256"],
                         export_seconds=0.0, details=meta["details"], reused=True)


def store(folder: Path, cache_key: str, artifact) -> None:
    """Keep one export; written beside its final place and renamed, so a reader never
    sees half an entry. A cache that cannot be written costs a rebuild, nothing else."""
    entry = folder / cache_key[:40]
    if (entry / "artifact.json").is_file():
        return
    try:
        details = json.loads(json.dumps(artifact.details))
    except (TypeError, ValueError):
        return          # an exporter reported something that is not JSON: do not cache it
    meta = {"schema": ENTRY_SCHEMA, "key": cache_key, "file": artifact.path.name, "format": artifact.format,
            "precision": artifact.precision, "sha256": artifact.sha256, "size_bytes": artifact.size_bytes,
            "parent_sha256": artifact.parent_sha256, "export_seconds": artifact.export_seconds, "details": details}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        shutil.copyfile(artifact.path, tmp / artifact.path.name)
        (tmp / "artifact.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.rename(tmp, entry)
        except OSError:      # another build stored the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        return
