"""The parts of `manifest.json` that make a build a release: what each artifact takes and
returns (with quantization parameters), hashes of the data that shaped it, the project's
git state, the per-stage table, and small test vectors that `edgepack verify --run`
replays. docs/manifest.md describes every field; `manifest_model.Manifest` types them
(schema/manifest.schema.json is generated from it).

`complete_dist` is what a build calls for each target's staging folder: it fills these
fields in, writes the test vectors, manifest.json and report.html, and returns the
finished manifest. `write_manifest` is the one way a manifest.json is written, and
`load_manifest`/`check_manifest`/`parse_manifest` the ways one is read: all of them
validate through the model.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError
from edgepack.release.manifest_model import MANIFEST_SCHEMA, Manifest

TEST_VECTOR_SAMPLES = 16      # 16 digits inputs are 4 KB; enough to catch a wrong kernel
TEST_VECTOR_DIR = "testdata"
SCHEMA_FILE = Path(__file__).with_name("schema") / "manifest.schema.json"

def array_sha256(a: np.ndarray) -> str:
    """Hash of an array's dtype, shape and C-order bytes: the same data gives the same
    hash whichever hook or file it came from, and a reshaped copy does not collide."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def data_fields(x, y: np.ndarray | None = None, names=None) -> dict:
    """A split's fields: one array, or a tuple of the model's inputs (with their `names`);
    the flat fields describe the first input, `inputs` each when there are several."""
    arrays = x if isinstance(x, tuple) else (x,)
    first = arrays[0]
    out = {"samples": int(len(first)), **_array_fields(first)}
    if len(arrays) > 1:
        out["inputs"] = [{"name": n, **_array_fields(a)} for n, a in zip(names, arrays)]
    if y is not None:
        out["labels_sha256"] = array_sha256(y)
    return out


def _array_fields(a: np.ndarray) -> dict:
    return {"sha256": array_sha256(a), "dtype": str(a.dtype), "shape": [int(d) for d in a.shape],
            "min": round(float(a.min()), 6), "max": round(float(a.max()), 6)}


def git_state(project_dir: Path) -> dict | None:
    """The commit the project folder is at, and whether it had uncommitted changes; None
    outside a git work tree or without git. A release records it so anyone can rebuild."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(project_dir), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "dirty": bool(status)}


def artifact_signature(path: Path, fmt: str, details: dict, *, input_names=None, output_names=None) -> dict:
    """What the artifact's runtime sees at its boundary (edgepack.formats.Format.signature),
    each tensor in declared order. Tensors named as declared are put in declared order by
    name (a LiteRT signature lists its inputs sorted by name); a format without names
    (ExecuTorch: `input_0`, ...) gets the declared ones by position, and the names its
    runtime uses stay in `runtime_name`."""
    from edgepack.formats import get_format

    sig = get_format(fmt).signature(path, details)
    for kind, names in (("inputs", input_names), ("outputs", output_names)):
        tensors = sig.get(kind) or []
        if names and sorted(t["name"] for t in tensors) == sorted(names) and len(set(names)) == len(names):
            by_name = {t["name"]: t for t in tensors}
            sig[kind] = [by_name[n] for n in names]
        elif names and len(tensors) == len(names):
            for t, name in zip(tensors, names):
                if t["name"] != name:
                    t["runtime_name"], t["name"] = t["name"], name
    return sig


def tolerance(signature: dict, precision: str, recorded) -> float:
    """How far a re-run may differ from the recorded outputs and still count as the same
    model: two output quantization steps for int8 (another CPU's kernels may round one
    step differently), float rounding for fp32. Several outputs: the widest of theirs."""
    arrays = recorded if isinstance(recorded, tuple) else (recorded,)
    quants = [o.get("quantization") for o in signature.get("outputs") or [{}]]
    widest = 0.0
    for i, out in enumerate(arrays):
        out = np.asarray(out, dtype=np.float32)
        span = float(out.max() - out.min()) if out.size else 0.0
        if precision == "int8":
            q = quants[i] if i < len(quants) else None
            step = q["scale"] if q else span / 255.0
            atol = max(2.0 * step, 1e-5)
        else:
            atol = max(1e-4 * max(1.0, float(np.abs(out).max(initial=0.0))), 1e-5)
        widest = max(widest, atol)
    return round(widest, 8)


def write_test_vectors(folder: Path, inputs, reference, outputs: dict, signatures: dict[str, dict],
                       precisions: dict[str, str], *, input_names=None, output_names=None) -> dict:
    """Write testdata/inputs, reference (the source model's outputs) and one file per
    artifact; return the manifest's `test_vectors` section. A one-input, one-output model
    gets plain float32 .npy files; a model with several inputs or outputs gets .npz files
    of .npy arrays keyed by the declared names, in declared order (integer inputs keep
    their dtype). Never pickled objects."""
    tv = folder / TEST_VECTOR_DIR
    tv.mkdir(parents=True, exist_ok=True)
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    reference = reference if isinstance(reference, tuple) else (reference,)
    named = len(inputs) > 1 or len(reference) > 1

    def save(stem: str, arrays: tuple, names) -> dict:
        if named:
            path = tv / f"{stem}.npz"
            arrays = tuple(np.ascontiguousarray(a, dtype=np.float32 if np.issubdtype(a.dtype, np.floating) else a.dtype)
                           for a in arrays)
            with path.open("wb") as f:
                np.savez(f, **dict(zip(names, arrays)))
        else:
            path = tv / f"{stem}.npy"
            arrays = (np.ascontiguousarray(arrays[0], dtype=np.float32),)
            np.save(path, arrays[0], allow_pickle=False)
        return {"file": f"{TEST_VECTOR_DIR}/{path.name}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "shape": [int(d) for d in arrays[0].shape]}

    section = {"samples": int(len(inputs[0])), "inputs": save("inputs", inputs, input_names),
               "reference": save("reference", reference, output_names), "outputs": {}}
    for file, out in sorted(outputs.items()):
        out = out if isinstance(out, tuple) else (out,)
        entry = save(file, out, output_names)
        entry["atol"] = tolerance(signatures[file], precisions[file], out)
        section["outputs"][file] = entry
    return section


def source_stage(manifest: dict) -> dict:
    """The first row of the per-stage table: the model as the project hands it over.
    Compression passes append their own rows after it."""
    src = manifest["source"]
    return {"name": "source", "kind": "source", "sha256": src["sha256"], "parameters": src["parameters"],
            "size_bytes": src["fp32_weight_bytes"], "accuracy": manifest["evaluation"]["reference_accuracy"],
            "config": {}}


def complete_dist(staging: Path, manifest: dict | Manifest, *, project_dir: Path, description: str,
                  calibration_x, evaluation_x, evaluation_y: np.ndarray, reference, outputs: dict,
                  artifact_paths: dict[str, Path], input_names=None, output_names=None) -> dict:
    """Fill in the release fields of a target's manifest, write testdata/, manifest.json
    and report.html into `staging`, and return the finished manifest.

    `outputs` maps each artifact's file name to its outputs on the evaluation inputs (at
    least the first TEST_VECTOR_SAMPLES rows, in order); `artifact_paths` maps the same
    names to the files in `staging` (or wherever they are). Inputs, reference and outputs
    may be one array or a tuple in declared order (`input_names`, `output_names`)."""
    from edgepack.release.report import write_report

    # A copy: the caller's dict is left as it was.
    m = manifest.to_json() if isinstance(manifest, Manifest) else json.loads(json.dumps(manifest))
    m["project"]["description"] = description
    m["git"] = git_state(project_dir)
    m["calibration"].update(data_fields(calibration_x, names=input_names))
    m["evaluation"].update(data_fields(evaluation_x, evaluation_y, names=input_names))
    m.setdefault("recipe", {"name": "none", "stages": [], "quantize": {}})
    m.setdefault("stages", [source_stage(m)])
    signatures, precisions = {}, {}
    for a in m["artifacts"]:
        a["signature"] = artifact_signature(artifact_paths[a["file"]], a["format"], a.get("export", {}),
                                            input_names=input_names, output_names=output_names)
        signatures[a["file"]], precisions[a["file"]] = a["signature"], a["precision"]
    def first(arrays, n):
        return tuple(np.asarray(a)[:n] for a in arrays) if isinstance(arrays, tuple) else np.asarray(arrays)[:n]

    n = min(TEST_VECTOR_SAMPLES, len(evaluation_x[0] if isinstance(evaluation_x, tuple) else evaluation_x))
    m["test_vectors"] = write_test_vectors(
        staging, first(evaluation_x, n), first(reference, n), {f: first(o, n) for f, o in outputs.items()},
        signatures, precisions, input_names=input_names, output_names=output_names)
    # A manifest the build assembled wrong is a bug in edgepack, not bad input: the
    # model's ValidationError (every bad field path) surfaces as one (exit 4).
    Manifest.model_validate(m)
    write_manifest(staging / "manifest.json", m)
    write_report(m, staging)
    return m


def write_manifest(path: Path, manifest: dict | Manifest, *, what: str | None = None) -> dict:
    """Validate `manifest` through the model and write it to `path` atomically (a reader
    never sees half a file); return the document written. A dict that does not validate
    raises ConfigError naming `what` (default: the path) and the first bad field.

    A valid dict is written as given: the model's dump of it has the same keys and
    values, and the dict's own key order is what the report lists open sections in."""
    from edgepack.release.dist import write_json

    if isinstance(manifest, Manifest):
        doc = manifest.to_json()
    else:
        parse_manifest(manifest, what=what or str(path))
        doc = manifest
    write_json(path, doc)
    return doc


def load_manifest(path: Path, *, what: str | None = None) -> dict:
    """Read a manifest.json and validate it; return the document as read."""
    what = what or str(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no manifest.json")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{what}: not valid JSON: {e}") from None
    return check_manifest(doc, what=what)


def check_manifest(doc, *, what: str) -> dict:
    """Validate a manifest document; return it unchanged (readers keep dict access)."""
    parse_manifest(doc, what=what)
    return doc


def parse_manifest(doc, *, what: str) -> Manifest:
    """The typed manifest of a document, or ConfigError: one line naming `what` and the
    first bad field path, with every problem in `.problems`."""
    from pydantic import ValidationError

    if not isinstance(doc, dict):
        raise ConfigError(f"{what}: expected a JSON object")
    if doc.get("schema") != MANIFEST_SCHEMA:
        raise ConfigError(f"{what}: schema is {doc.get('schema')!r}; this edgepack reads {MANIFEST_SCHEMA!r}")
    for a in doc.get("artifacts") if isinstance(doc.get("artifacts"), list) else ():
        name = a.get("file") if isinstance(a, dict) else None
        if isinstance(name, str) and ("/" in name or "\\" in name or name in ("", ".", "..")):
            raise ConfigError(f"{what}: artifact file name {name!r} is not a plain file name")
    try:
        return Manifest.model_validate(doc)
    except ValidationError as e:
        problems = [f"{_field_path(err['loc'], doc)}: {_message(err)}" for err in e.errors()]
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise ConfigError(f"{what}: {problems[0]}{more}", problems=[f"{what}: {p}" for p in problems]) from None


def _field_path(loc: tuple, doc) -> str:
    """`artifacts[0].measurements[1].p50_ms` from pydantic's error location, which also
    names the union member it tried (a measurement's method, `int` or `str`): those
    steps are not in the document and are left out."""
    out, node = "", doc
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            out, node = f"{out}[{step}]", node[step]
        elif isinstance(node, dict) and step in node:
            out, node = f"{out}.{step}" if out else str(step), node[step]
        elif last and isinstance(node, dict):   # a missing key
            out = f"{out}.{step}" if out else str(step)
    return out or "(top level)"


def _message(err: dict) -> str:
    if err["type"] == "missing":
        return "missing"
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return err["msg"].removeprefix("Value error, ")
