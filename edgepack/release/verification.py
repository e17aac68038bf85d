"""`edgepack verify`: is this archive exactly the release its manifest describes?

In order, stopping at the first step that fails (each failure is one line, exit 1):
the archive is a complete gzip stream whose members are all safe (checked before
anything is extracted, into a temporary folder only); it holds one release folder with
manifest.json; the signature over manifest.json holds for the given public key; every
file the manifest lists is there with its sha256 and size, and nothing else is; the
artifacts' and test vectors' hashes agree with the package listing. With `run`, each
artifact is then executed in its own runtime on the bundled inputs and compared with
the outputs recorded at build time, within the tolerance the manifest states.
"""

from __future__ import annotations

import json
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
            "key_fingerprint": self.key_fingerprint,
            "files_checked": self.files_checked,
            "checks": [{"name": c.name, "detail": c.detail} for c in self.checks],
            "runs": [{"file": r.file, "format": r.format, "samples": r.samples, "max_abs_diff": r.max_abs_diff,
                      "atol": r.atol, "runtime": r.runtime, "ok": r.ok} for r in self.runs],
            "seconds": round(self.seconds, 2),
        }


def _fail(message: str, problems: list[str] | None = None):
    raise VerificationError(message, problems=problems)


def verify(archive: Path, *, public_key: Path | None = None, run: bool = False) -> VerifyResult:
    from edgepack.release import signing
    from edgepack.release.archive import ArchiveError, extracted, sha256_file
    from edgepack.release.manifest import check_manifest

    started = time.perf_counter()
    if not archive.is_file():
        raise ConfigError(f"{archive}: no such archive")
    key = signing.load_public_key(public_key) if public_key is not None else None  # a bad key file is bad input (2)
    checks: list[Check] = []
    try:
        with extracted(archive) as (folder, members):
            tops = {m.name.split("/")[0] for m in members}
            if len(tops) != 1:
                _fail(f"{archive.name}: expected one release folder at the top, found {len(tops)}: {', '.join(sorted(tops)[:5])}")
            root = tops.pop()
            checks.append(Check("archive", f"{len(members)} members, all regular files or folders inside {root}/"))
            release = folder / root
            manifest_path = release / MANIFEST_FILE
            if not manifest_path.is_file():
                _fail(f"{archive.name}: no {root}/{MANIFEST_FILE}; this is not an edgepack release")
            manifest_bytes = manifest_path.read_bytes()
            try:
                manifest = check_manifest(json.loads(manifest_bytes), what=f"{archive.name}: {MANIFEST_FILE}")
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                _fail(f"{archive.name}: {MANIFEST_FILE} is not valid JSON: {e}")
            except ConfigError as e:
                _fail(str(e))
            pkg = manifest.get("package")
            if not isinstance(pkg, dict) or not isinstance(pkg.get("files"), list):
                _fail(f"{archive.name}: {MANIFEST_FILE} has no 'package.files' list; it is a build manifest, not a release")

            # Signature first: until it holds, nothing else in the manifest can be trusted.
            sig_path = release / SIGNATURE_FILE
            claimed = pkg.get("signature") or None
            fingerprint = None
            if key is not None:
                fingerprint = signing.fingerprint(key)
                if not sig_path.is_file():
                    _fail(f"{archive.name}: no signature ({SIGNATURE_FILE}) in the release, and --public-key requires one")
                if not signing.verify(key, manifest_bytes, sig_path.read_bytes()):
                    hint = ""
                    if isinstance(claimed, dict) and claimed.get("public_key_sha256") not in (None, fingerprint):
                        hint = (f" (the manifest names key {str(claimed.get('public_key_sha256'))[:16]}..., "
                                f"--public-key is {fingerprint[:16]}...)")
                    _fail(f"{archive.name}: the signature does not match: {MANIFEST_FILE} was changed after signing, "
                          f"or it was signed with another key{hint}")
                signature = "valid"
                checks.append(Check("signature", f"ed25519, key sha256 {fingerprint}"))
            elif sig_path.is_file():
                signature = "not checked (no --public-key)"
                checks.append(Check("signature", "present but not checked: pass --public-key to check it"))
            else:
                if claimed:
                    _fail(f"{archive.name}: the manifest says the release is signed, but {SIGNATURE_FILE} is missing")
                signature = "unsigned"
                checks.append(Check("signature", "the release is not signed"))

            # Every listed file present and intact; nothing unlisted.
            listed: dict[str, dict] = {}
            for entry in pkg["files"]:
                path = entry.get("path") if isinstance(entry, dict) else None
                if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                    _fail(f"{archive.name}: {MANIFEST_FILE} lists an invalid path {path!r}")
                listed[path] = entry
            present = {m.name[len(root) + 1:] for m in members if not m.is_dir and m.name != root}
            present -= {MANIFEST_FILE, SIGNATURE_FILE}
            problems = [f"{p}: in the archive but not listed in {MANIFEST_FILE}" for p in sorted(present - set(listed))]
            problems += [f"{p}: listed in {MANIFEST_FILE} but missing from the archive" for p in sorted(set(listed) - present)]
            for p in sorted(set(listed) & present):
                f = release / p
                actual = sha256_file(f)
                if actual != listed[p].get("sha256"):
                    problems.append(f"{p}: sha256 {actual[:16]}... does not match the manifest's {str(listed[p].get('sha256'))[:16]}...")
                elif f.stat().st_size != listed[p].get("size_bytes"):
                    problems.append(f"{p}: {f.stat().st_size} bytes, the manifest says {listed[p].get('size_bytes')}")
            for a in manifest["artifacts"]:
                if a["file"] in listed and listed[a["file"]].get("sha256") != a["sha256"]:
                    problems.append(f"{a['file']}: the artifact entry and the package listing disagree on its sha256")
            tv = manifest.get("test_vectors") or {}
            for e in [tv.get("inputs"), tv.get("reference"), *(tv.get("outputs") or {}).values()]:
                if e and e.get("file") in listed and listed[e["file"]].get("sha256") != e.get("sha256"):
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
        archive=archive, sha256=sha256_file(archive), root=root, project=manifest["project"].get("name", "?"),
        version=str(manifest["project"].get("version")), target=manifest["target"], signature=signature,
        key_fingerprint=fingerprint, files_checked=len(listed), checks=tuple(checks), runs=runs,
        seconds=time.perf_counter() - started,
    )


def _load_npy(path: Path, what: str):
    import numpy as np

    try:
        a = np.load(path, allow_pickle=False)  # test vectors are plain arrays; never unpickle
    except (ValueError, OSError) as e:
        _fail(f"{what}: not a plain .npy array: {e}")
    if a.dtype != np.float32:
        _fail(f"{what}: dtype {a.dtype}, expected float32")
    return a


def _run_artifacts(release: Path, manifest: dict, name: str):
    import numpy as np

    from edgepack.devices.host import HostRunner

    tv = manifest.get("test_vectors") or {}
    if not tv.get("inputs") or not tv.get("outputs"):
        _fail(f"{name}: the release carries no test vectors; --run needs a release packaged from a build that wrote testdata/")
    inputs = _load_npy(release / tv["inputs"]["file"], tv["inputs"]["file"])
    runner = HostRunner()
    for a in manifest["artifacts"]:
        entry = (tv.get("outputs") or {}).get(a["file"])
        if entry is None:
            _fail(f"{name}: no recorded outputs for {a['file']} in test_vectors")
        recorded = _load_npy(release / entry["file"], entry["file"])
        if recorded.shape[0] != inputs.shape[0]:
            _fail(f"{name}: {entry['file']} has {recorded.shape[0]} rows for {inputs.shape[0]} inputs")
        try:
            result = runner.run(release / a["file"], a["format"], inputs, warmup=0, iterations=1, threads=1,
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
