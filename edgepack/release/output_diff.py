"""Whether two builds whose artifact bytes differ still compute the same thing.

Bytes can differ for reasons that change nothing a user would notice (a float summation
order on another build machine moving one quantization scale by an ulp), or because the
model changed. Each build records its artifacts' outputs on its test inputs
(`test_vectors`, with the tolerance `verify --run` allows a re-run); when both builds
used the same inputs, comparing those recorded outputs tells the two cases apart without
running anything.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError
from edgepack.release.diff import Change


def _reader(source: Path, manifest: dict):
    """A function reading one of the release's files by its manifest-relative path."""
    from edgepack.release.paths import inside

    if source.is_dir():
        return lambda rel: inside(source, rel, what="test vector").read_bytes()
    if source.name.endswith((".tar.gz", ".tgz")):
        from edgepack.release.reading import read_listed_files

        return lambda rel: read_listed_files(source, {rel})[rel]
    root = source.parent                    # a manifest.json beside its dist
    return lambda rel: inside(root, rel, what="test vector").read_bytes()


def _array(read, rel: str) -> np.ndarray:
    return np.load(io.BytesIO(read(rel)), allow_pickle=False)


def recorded_output_changes(old_source: Path, new_source: Path, old: dict, new: dict) -> list[Change]:
    """One change per artifact present in both builds with different bytes, saying
    whether their recorded outputs agree within tolerance."""
    otv, ntv = old.get("test_vectors") or {}, new.get("test_vectors") or {}
    read_old, read_new = _reader(old_source, old), _reader(new_source, new)
    changes: list[Change] = []
    old_by_key = {(a.get("format"), a.get("precision")): a for a in old.get("artifacts") or []}
    for b in new.get("artifacts") or []:
        a = old_by_key.get((b.get("format"), b.get("precision")))
        if a is None or a.get("sha256") == b.get("sha256"):
            continue
        item = f"{b.get('format')} {b.get('precision')}"
        oo, no = (otv.get("outputs") or {}).get(a.get("file")), (ntv.get("outputs") or {}).get(b.get("file"))
        if not oo or not no:
            changes.append(Change("artifact", item, "outputs", None, None,
                                  note="not compared: a build recorded no test outputs for it"))
            continue
        if (otv.get("inputs") or {}).get("sha256") != (ntv.get("inputs") or {}).get("sha256"):
            changes.append(Change("artifact", item, "outputs", None, None,
                                  note="not compared: the builds recorded outputs on different test inputs"))
            continue
        try:
            x, y = _array(read_old, oo["file"]), _array(read_new, no["file"])
        except (OSError, ValueError, EdgepackError) as e:
            changes.append(Change("artifact", item, "outputs", None, None, note=f"not compared: {e}"))
            continue
        if x.shape != y.shape:
            changes.append(Change("artifact", item, "outputs", list(x.shape), list(y.shape),
                                  note="the outputs' shapes differ"))
            continue
        atol = min(float(oo["atol"]), float(no["atol"]))
        diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        if diff <= atol:
            note = (f"bytes differ, outputs within tolerance: max |diff| {diff:.3g} <= atol {atol:.3g} "
                    f"on {x.shape[0]} recorded test inputs")
        else:
            note = (f"outputs differ beyond tolerance: max |diff| {diff:.3g} > atol {atol:.3g} "
                    f"on {x.shape[0]} recorded test inputs")
        changes.append(Change("artifact", item, "outputs_max_abs_diff", None, diff, note=note))
    return changes
