"""`edgepack package`: turn a finished dist/<target>/ into one reproducible release
archive, optionally signed, optionally compared with the previous release.

The archive holds one folder, `edgepack-<project>-<target>-<version>/`, with exactly:
the artifacts, testdata/ (the test vectors the manifest lists), report.html, README.md
(the model card), manifest.json and, when signed, manifest.json.sig. Anything else that
happens to be in the dist folder stays out. manifest.json's `package.files` lists every
other file with its sha256 and size, so the signature over manifest.json covers them all.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import ConfigError
from edgepack.release.archive import sha256_file, source_date_epoch, write_archive
from edgepack.release.manifest import load_manifest, parse_manifest, write_manifest
from edgepack.release.paths import inside

PACKAGE_SCHEMA = "edgepack.package/1"
SIGNATURE_FILE = "manifest.json.sig"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class PackagedFile:
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class PackageResult:
    archive: Path
    sha256: str
    size_bytes: int
    root: str
    project: str
    version: str
    target: str
    files: tuple[PackagedFile, ...]
    signed: bool
    key_fingerprint: str | None
    source_date_epoch: int
    seconds: float
    diff: object | None = None          # DiffResult when --against was given

    @property
    def exit_code(self) -> int:
        return self.diff.exit_code if self.diff is not None else 0

    def as_dict(self) -> dict:
        return {
            "schema": PACKAGE_SCHEMA,
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "archive": str(self.archive),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "root": self.root,
            "project": self.project,
            "version": self.version,
            "target": self.target,
            "files": [{"path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes} for f in self.files],
            "signed": self.signed,
            "key_fingerprint": self.key_fingerprint,
            "source_date_epoch": self.source_date_epoch,
            "seconds": round(self.seconds, 2),
            "diff": self.diff.as_dict() if self.diff is not None else None,
        }


def release_name(manifest: dict) -> str:
    """The release folder of a validated manifest (edgepack.names checked every part)."""
    from edgepack.names import release_root

    p = manifest["project"]
    return release_root(p["name"], manifest["target"], p["version"])


def _dist_problem(dist: Path) -> str | None:
    if (dist / MANIFEST_FILE).is_file():
        return None
    rejected = dist.with_name(dist.name + ".rejected")
    if rejected.is_dir():
        return (f"{dist}: no passing build to package; the last build failed its budget and was kept in {rejected} "
                f"(fix it and run `edgepack build --target {dist.name}`)")
    return f"{dist}: no build to package (no manifest.json); run `edgepack build --target {dist.name}` first"


def _collect(dist: Path, manifest: dict) -> dict[str, Path]:
    """The files the release carries from dist, each checked against the manifest, so a
    stale or edited dist folder is never packaged under a manifest that does not match."""
    files: dict[str, Path] = {}
    problems = []

    def take(rel: str, expected_sha: str | None, what: str) -> None:
        src = inside(dist, rel, what=f"{dist / MANIFEST_FILE}: {what}")   # never a link out of the dist
        if not src.is_file():
            problems.append(f"{src}: missing ({what} listed in manifest.json)")
            return
        if expected_sha is not None and sha256_file(src) != expected_sha:
            problems.append(f"{src}: sha256 does not match manifest.json; the dist folder was changed after the build")
            return
        files[rel] = src

    for a in manifest["artifacts"]:
        take(a["file"], a["sha256"], "artifact")
    tv = manifest.get("test_vectors") or {}
    for entry in [tv.get("inputs"), tv.get("reference"), *(tv.get("outputs") or {}).values()]:
        if entry:
            take(entry["file"], entry.get("sha256"), "test vector")
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else f"{len(problems)} problems in {dist}", problems=problems)
    return files


# Figures that come from a clock or the memory of one run: they differ between two builds
# of the same inputs. Estimates (from instruction counts) and everything else do not.
RUN_TIMINGS = frozenset({"p50", "p90", "p99", "mean", "std", "load_ms", "import_ms", "first_inference_ms",
                         "peak_rss_mb", "p50_ms", "p90_ms", "emulated_wall_p50_ms", "seconds"})
TIMINGS_OMITTED = "omitted from this reproducible release: timings of one run differ between builds"


def without_run_timings(manifest: dict) -> dict:
    """The manifest less its wall-clock figures (host latency, memory, emulated wall time,
    stage durations), so that two builds of the same inputs package to the same bytes.
    The result is validated: the model allows exactly these figures to be absent."""
    m = json.loads(json.dumps(manifest))
    for a in m.get("artifacts") or []:
        lat = a.get("latency_ms") or {}
        a["latency_ms"] = {**{k: v for k, v in lat.items() if k not in RUN_TIMINGS}, "omitted": TIMINGS_OMITTED}
        a["measurements"] = [r if r.get("method") == "estimated" else {k: v for k, v in r.items() if k not in RUN_TIMINGS}
                             for r in a.get("measurements") or []]
        a.pop("timings_s", None)     # step durations, and whether this build reused an export
    m.pop("timings_s", None)
    for stage in m.get("stages") or []:
        stage.pop("seconds", None)
    parse_manifest(m, what="reproducible manifest")
    return m


def package(dist: Path, *, out_dir: Path | None = None, archive: Path | None = None, sign_key: Path | None = None,
            against: Path | None = None, thresholds=None, reproducible: bool = False) -> PackageResult:
    """Package dist (a dist/<target> folder written by a passing build). `reproducible`
    leaves out the figures measured with a clock (see RUN_TIMINGS): two builds of the same
    inputs then give byte-identical archives."""
    from edgepack.release import card, signing
    from edgepack.release.report import REPORT_FILE, write_report

    started = time.perf_counter()
    dist = dist.resolve()
    problem = _dist_problem(dist)
    if problem:
        raise ConfigError(problem)
    manifest = load_manifest(dist / MANIFEST_FILE)
    if reproducible:
        manifest = without_run_timings(manifest)
    gates = manifest.get("gates") or {}
    if gates.get("passed") is False:
        raise ConfigError(f"{dist}: this build failed its budget ({'; '.join(gates.get('failures') or [])}); a failed build is not released")
    key = signing.load_private_key(sign_key) if sign_key is not None else None  # fail on a bad key before any work
    previous = None
    if against is not None:
        from edgepack.release.diff import load_any_manifest

        previous = load_any_manifest(against)
    epoch = source_date_epoch()
    files = _collect(dist, manifest)
    root = release_name(manifest)
    target = archive or (out_dir or dist.parent) / f"{root}.tar.gz"

    with tempfile.TemporaryDirectory(prefix="edgepack-package-") as tmp:
        tmp = Path(tmp)
        release = json.loads(json.dumps(manifest))
        release.pop("package", None)
        release["package"] = {
            "root": root,
            "source_date_epoch": epoch,
            "signature": None if key is None else {"algorithm": signing.ALGORITHM, "file": SIGNATURE_FILE,
                                                   "public_key_sha256": signing.fingerprint(key.public_key())},
            "files": [],
        }
        report = inside(dist, REPORT_FILE, what=f"{dist}: the build's")
        if report.is_file() and not reproducible:
            files[REPORT_FILE] = report
        else:  # a dist written before reports existed: render it from the same manifest
            files[REPORT_FILE] = write_report(manifest, tmp)
        (tmp / card.CARD_FILE).write_text(card.render(release), encoding="utf-8")
        files[card.CARD_FILE] = tmp / card.CARD_FILE
        listed = [PackagedFile(rel, sha256_file(src), src.stat().st_size) for rel, src in sorted(files.items())]
        release["package"]["files"] = [{"path": f.path, "sha256": f.sha256, "size_bytes": f.size_bytes} for f in listed]
        release = write_manifest(tmp / MANIFEST_FILE, release, what="release manifest")
        files[MANIFEST_FILE] = tmp / MANIFEST_FILE
        if key is not None:
            (tmp / SIGNATURE_FILE).write_bytes(signing.sign(key, (tmp / MANIFEST_FILE).read_bytes()))
            files[SIGNATURE_FILE] = tmp / SIGNATURE_FILE
        write_archive(target, root, files, mtime=epoch)

    diff = None
    if previous is not None:
        from edgepack.release.diff import Thresholds, diff_manifests

        diff = diff_manifests(previous, release, thresholds or Thresholds(), old_label=str(against), new_label=str(target))
    return PackageResult(
        archive=target, sha256=sha256_file(target), size_bytes=target.stat().st_size, root=root,
        project=release["project"]["name"], version=str(release["project"].get("version")), target=release["target"],
        files=tuple(listed), signed=key is not None,
        key_fingerprint=release["package"]["signature"]["public_key_sha256"] if key is not None else None,
        source_date_epoch=epoch, seconds=time.perf_counter() - started, diff=diff,
    )

