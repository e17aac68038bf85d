"""`edgepack verify`: is this archive exactly the release its manifest describes?

In order, stopping at the first step that fails (each failure is one line, exit 1):
the archive is a complete gzip stream whose members are all safe, in one release folder
named as its manifest.json says, each member listed in the manifest with the size it
has (all checked in one pass that writes nothing: edgepack.release.reading); the
signature over manifest.json holds for the given public key; the files, extracted into
a temporary folder only, have the sha256 the manifest lists; the artifacts' and test
vectors' hashes agree with the package listing. With `run`, each
artifact is then executed in its own runtime on the bundled inputs and compared with
the outputs recorded at build time, within the tolerance the manifest states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.errors import ConfigError, EdgepackError, VerificationError
from edgepack.release.packaging import MANIFEST_FILE, SIGNATURE_FILE

VERIFY_SCHEMA = "edgepack.verify/1"


@dataclass(frozen=True)
class Check:
    name: str
    detail: str


@dataclass(frozen=True)
class RunCheck:
    file: str
    format: str
    samples: int
    max_abs_diff: float
    atol: float
    runtime: str

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol


@dataclass(frozen=True)
class VerifyResult:
    archive: Path
    sha256: str
    root: str
    project: str
    version: str
    target: str
    signature: str                   # "valid", "not checked (no --public-key)", "unsigned"
    key_fingerprint: str | None
    files_checked: int
    checks: tuple[Check, ...]
    runs: tuple[RunCheck, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if all(r.ok for r in self.runs) else 1

    @property
    def authenticated(self) -> bool:
        """Whether the release is known to come from the key's holder. Without a public
        key, matching hashes only show the files agree with a manifest anyone could have
        rewritten (and re-hashed, and left unsigned)."""
        return self.signature == "valid"

    @property
    def authenticity(self) -> str:
        if self.authenticated:
            return f"checked: the ed25519 signature is valid for key sha256 {self.key_fingerprint}"
        why = ("the release is not signed" if self.signature == "unsigned"
               else "the release is signed, but no --public-key was given to check it against")
        return (f"NOT checked: {why}; the files match this manifest, but anyone who can rewrite the archive "
                "could have made that so")

    def as_dict(self) -> dict:
        return {
            "schema": VERIFY_SCHEMA,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "archive": str(self.archive),
            "sha256": self.sha256,
            "root": self.root,
            "project": self.project,
            "version": self.version,
            "target": self.target,
            "signature": self.signature,
            "authenticated": self.authenticated,
            "authenticity": self.authenticity,
            "key_fingerprint": self.key_fingerprint,
            "files_checked": self.files_checked,
            "checks": [{"name": c.name, "detail": c.detail} for c in self.checks],
            "runs": [{"file": r.file, "format": r.format, "samples": r.samples, "max_abs_diff": r.max_abs_diff,
                      "atol": r.atol, "runtime": r.runtime, "ok": r.ok} for r in self.runs],
            "seconds": round(self.seconds, 2),
        }


def _fail(message: str, problems: list[str] | None = None):
    raise VerificationError(message, problems=problems)


def verify(archive: Path, *, public_key: Path | None = None, run: bool = False,
           require_signature: bool = False) -> VerifyResult:
    """Verify `archive` (see the module docstring). `require_signature`: the release must
    be signed and its signature checked, so a public key must be given; a release
    without a valid signature then fails (exit 1) like any other tampering."""
    from edgepack.release import signing
    from edgepack.release.archive import ArchiveError, extracted, sha256_file
    from edgepack.release.reading import scan_release

    started = time.perf_counter()
    if not archive.is_file():
        raise ConfigError(f"{archive}: no such archive")
    if require_signature and public_key is None:
        # Never a key the release names: whoever rewrote the release could name theirs.
        raise ConfigError("--require-signature needs --public-key KEY.pub: a signature only proves something "
                          "checked against a key you trust")
    key = signing.load_public_key(public_key) if public_key is not None else None  # a bad key file is bad input (2)
    checks: list[Check] = []
    try:
        # Nothing is written before the whole archive has been read once and every member
        # held to the manifest's listing (edgepack.release.reading).
        try:
            scan = scan_release(archive)
        except ConfigError as e:  # a corrupt or unsafe archive, or a bad manifest: a failed verification
            _fail(str(e), e.problems)
        root, manifest, listed = scan.root, scan.manifest, scan.listed
        checks.append(Check("archive", f"{len(scan.members)} members, all regular files or folders inside {root}/, "
                                       f"each the size {MANIFEST_FILE} lists"))

        # Signature first: until it holds, nothing else in the manifest can be trusted.
        claimed = manifest["package"].get("signature") or None
        fingerprint = None
        if key is not None:
            fingerprint = signing.fingerprint(key)
            if scan.signature is None:
                _fail(f"{archive.name}: no signature ({SIGNATURE_FILE}) in the release, and --public-key requires one")
            if not signing.verify(key, scan.manifest_bytes, scan.signature):
                hint = ""
                if isinstance(claimed, dict) and claimed.get("public_key_sha256") not in (None, fingerprint):
                    hint = (f" (the manifest names key {str(claimed.get('public_key_sha256'))[:16]}..., "
                            f"--public-key is {fingerprint[:16]}...)")
                _fail(f"{archive.name}: the signature does not match: {MANIFEST_FILE} was changed after signing, "
                      f"or it was signed with another key{hint}")
            signature = "valid"
            checks.append(Check("signature", f"ed25519, key sha256 {fingerprint}"))
        elif scan.signature is not None:
            signature = "not checked (no --public-key)"
            checks.append(Check("signature", "present but not checked: pass --public-key to check it"))
        else:
            if claimed:
                _fail(f"{archive.name}: the manifest says the release is signed, but {SIGNATURE_FILE} is missing")
            signature = "unsigned"
            checks.append(Check("signature", "the release is not signed; nothing shows who made it"))

        # Every listed file present and intact; nothing unlisted (the scan refused those).
        problems = [f"{p}: listed in {MANIFEST_FILE} but missing from the archive" for p in sorted(set(listed) - scan.present)]
        with extracted(archive, expected=scan.expected) as (folder, _):
            release = folder / root
            for p in sorted(scan.present):
                actual = sha256_file(release / p)
                if actual != listed[p]["sha256"]:
                    problems.append(f"{p}: sha256 {actual[:16]}... does not match the manifest's {listed[p]['sha256'][:16]}...")
            for a in manifest["artifacts"]:
                if a["file"] in listed and listed[a["file"]]["sha256"] != a["sha256"]:
                    problems.append(f"{a['file']}: the artifact entry and the package listing disagree on its sha256")
            tv = manifest.get("test_vectors") or {}
            for e in [tv.get("inputs"), tv.get("reference"), *(tv.get("outputs") or {}).values()]:
                if e and e["file"] in listed and listed[e["file"]]["sha256"] != e["sha256"]:
                    problems.append(f"{e['file']}: the test-vector entry and the package listing disagree on its sha256")
            if problems:
                _fail(problems[0] if len(problems) == 1 else f"{archive.name}: {len(problems)} integrity problems", problems)
            checks.append(Check("files", f"{len(listed)} files match their sha256 and size; nothing unlisted"))

            runs = tuple(_run_artifacts(release, manifest, archive.name)) if run else ()
            if runs:
                checks.append(Check("run", f"{len(runs)} artifact(s) re-run on {runs[0].samples} bundled inputs"))
            bad = [r for r in runs if not r.ok]
            if bad:
                lines = [f"{r.file}: max |difference| {r.max_abs_diff:.6g} exceeds the tolerance {r.atol:.6g} ({r.runtime})" for r in bad]
                head = f"{archive.name}: {len(bad)} artifact(s) no longer compute the recorded outputs"
                _fail(head if len(bad) > 1 else f"{head}: {lines[0]}", lines)
    except ArchiveError as e:  # a corrupt or unsafe archive is a failed verification, not a usage error
        raise VerificationError(str(e)) from None
    return VerifyResult(
        archive=archive, sha256=sha256_file(archive), root=root, project=manifest["project"]["name"],
        version=manifest["project"]["version"], target=manifest["target"], signature=signature,
        key_fingerprint=fingerprint, files_checked=len(listed), checks=tuple(checks), runs=runs,
        seconds=time.perf_counter() - started,
    )


def _load_npy(release: Path, entry: dict, name: str):
    """A test vector the manifest lists, as the float32 array of the shape it states."""
    import numpy as np

    from edgepack.release.paths import inside

    what = entry["file"]
    path = inside(release, what, what=f"{name}: {MANIFEST_FILE}: test vector")
    try:
        # Never unpickle; and mapped, not read: a header claiming more than the file holds
        # fails here instead of allocating what it claims.
        a = np.array(np.load(path, allow_pickle=False, mmap_mode="r"))
    except (ValueError, OSError, EOFError) as e:
        _fail(f"{name}: {what}: not a plain .npy array: {e}")
    if a.dtype != np.float32:
        _fail(f"{name}: {what}: dtype {a.dtype}, expected float32")
    if list(a.shape) != list(entry["shape"]) or a.ndim == 0:
        _fail(f"{name}: {what}: shape {list(a.shape)}, {MANIFEST_FILE} says {list(entry['shape'])} "
              "(a test vector has one row per sample)")
    return a


def _load_named(release: Path, entry: dict, name: str, names: list[str]) -> tuple:
    """A .npz test vector of a model with several inputs or outputs: its arrays in the
    declared order of `names`, each with one row per sample."""
    import numpy as np

    from edgepack.release.paths import inside

    what = entry["file"]
    path = inside(release, what, what=f"{name}: {MANIFEST_FILE}: test vector")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            arrays = {k: np.array(loaded[k]) for k in loaded.files}
    except (ValueError, OSError, EOFError, AttributeError) as e:
        _fail(f"{name}: {what}: not a plain .npz of arrays: {e}")
    if list(arrays) != list(names):
        _fail(f"{name}: {what}: holds {', '.join(arrays)}; {MANIFEST_FILE} declares {', '.join(names)}")
    first = arrays[names[0]]
    if list(first.shape) != list(entry["shape"]) or any(a.ndim == 0 or len(a) != len(first) for a in arrays.values()):
        _fail(f"{name}: {what}: shapes {[list(a.shape) for a in arrays.values()]} disagree with {MANIFEST_FILE} "
              "(one row per sample in every array)")
    return tuple(arrays[n] for n in names)


def _run_artifacts(release: Path, manifest: dict, name: str):
    tv = manifest.get("test_vectors") or {}
    if not tv.get("inputs") or not tv.get("outputs"):
        _fail(f"{name}: the release carries no test vectors; --run needs a release packaged from a build that wrote testdata/")
    if tv["inputs"]["file"].endswith(".npz"):
        yield from _run_named(release, manifest, name)
        return
    yield from _run_one_array(release, manifest, name)


def _run_named(release: Path, manifest: dict, name: str):
    """`--run` for a model with several inputs or outputs: each artifact fed by the declared
    names and every output compared with the recorded one."""
    import numpy as np

    from edgepack.devices.base import run_declared
    from edgepack.devices.host import HostRunner
    from edgepack.release.paths import inside

    tv, src = manifest["test_vectors"], manifest["source"]
    input_names = [i["name"] for i in src.get("inputs") or []] or [src["input_name"]]
    output_names = [o["name"] for o in src.get("outputs") or []] or [src["output_name"]]
    inputs = _load_named(release, tv["inputs"], name, input_names)
    runner = HostRunner()
    for a in manifest["artifacts"]:
        entry = (tv.get("outputs") or {}).get(a["file"])
        if entry is None:
            _fail(f"{name}: no recorded outputs for {a['file']} in test_vectors")
        recorded = _load_named(release, entry, name, output_names)
        artifact = inside(release, a["file"], what=f"{name}: {MANIFEST_FILE}: artifact")
        try:
            result = run_declared(runner, artifact, a["format"], inputs, input_names=input_names,
                                  output_names=output_names, warmup=0, iterations=1, threads=1,
                                  delegate=(a.get("delegate") or {}).get("requested"))
        except EdgepackError as e:
            _fail(f"{name}: {a['file']} did not run: {e}")
        diff = 0.0
        for out_name, got, want in zip(output_names, result.outputs, recorded):
            if got.shape != want.shape:
                _fail(f"{name}: {a['file']} returned {out_name!r} of shape {list(got.shape)}, recorded {list(want.shape)}")
            if want.size:
                diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - want))))
        yield RunCheck(a["file"], a["format"], int(len(inputs[0])), round(diff, 8), float(entry["atol"]),
                       f"{result.runtime} {result.runtime_version}")


def _run_one_array(release: Path, manifest: dict, name: str):
    import numpy as np

    from edgepack.devices.host import HostRunner
    from edgepack.release.paths import inside

    tv = manifest["test_vectors"]
    inputs = _load_npy(release, tv["inputs"], name)
    runner = HostRunner()
    for a in manifest["artifacts"]:
        entry = (tv.get("outputs") or {}).get(a["file"])
        if entry is None:
            _fail(f"{name}: no recorded outputs for {a['file']} in test_vectors")
        recorded = _load_npy(release, entry, name)
        if recorded.shape[0] != inputs.shape[0]:
            _fail(f"{name}: {entry['file']} has {recorded.shape[0]} rows for {inputs.shape[0]} inputs")
        artifact = inside(release, a["file"], what=f"{name}: {MANIFEST_FILE}: artifact")
        try:
            result = runner.run(artifact, a["format"], inputs, warmup=0, iterations=1, threads=1,
                                delegate=(a.get("delegate") or {}).get("requested"))
        except EdgepackError as e:
            _fail(f"{name}: {a['file']} did not run: {e}")
        outputs = np.asarray(result.outputs, dtype=np.float32)
        if outputs.size != recorded.size:
            _fail(f"{name}: {a['file']} returned {list(outputs.shape)}, the recorded outputs are {list(recorded.shape)}")
        outputs = outputs.reshape(recorded.shape)
        diff = float(np.max(np.abs(outputs - recorded))) if recorded.size else 0.0
        yield RunCheck(a["file"], a["format"], int(inputs.shape[0]), round(diff, 8), float(entry["atol"]),
                       f"{result.runtime} {result.runtime_version}")
