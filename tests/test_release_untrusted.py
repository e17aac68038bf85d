"""Releases, dists and key files that someone else made or changed: `package`, `verify`,
`diff`, `profile` and `keygen` through the CLI, on a real build of the digits sample,
with real archives (gzip bombs included), real symlinks and real child processes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from edgepack.release.archive import write_archive
from release_helpers import built_output, cli, copy_output, one_line_error

pytestmark = pytest.mark.slow

ROOT = "edgepack-digits-android-1.0.0"
ARCHIVE = f"{ROOT}.tar.gz"
WRITE_LIMIT = 8 * 1024**2    # no file the CLI writes while refusing a bomb may reach this


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """An unsigned release of the shared build."""
    out = tmp_path_factory.mktemp("rel")
    proc = cli("package", "-t", "android", "-o", built_output(), "--archive", out / ARCHIVE)
    assert proc.returncode == 0, proc.stderr
    return out / ARCHIVE


def _cli_writing_little(*args, tmp: Path):
    """The CLI in a child process that cannot write any file of WRITE_LIMIT bytes or more
    (RLIMIT_FSIZE: a larger write fails with EFBIG, which would not be a clean exit 1),
    with its temporary files in `tmp`."""
    import subprocess
    import sys

    from release_helpers import REPO

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT, WRITE_LIMIT))

    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, preexec_fn=limit)
    return proc, time.perf_counter() - started


# --------------------------------------------------------------------------- names and folders


def test_package_refuses_a_manifest_whose_version_is_a_path(tmp_path):
    out = copy_output(tmp_path)
    manifest = out / "android" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["project"]["version"] = "1/../../../../evil"
    manifest.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    proc = cli("package", "-t", "android", "-o", out)
    assert proc.returncode == 2
    assert "project.version: '1/../../../../evil' is not a valid version: use 1 to 64 letters" in one_line_error(proc)
    assert sorted(p.name for p in out.iterdir()) == ["android"]
    assert not (tmp_path.parent / "evil.tar.gz").exists()


def _repack(src: Path, dst: Path, root: str, change=None) -> Path:
    """`src` unpacked, changed by `change(folder)`, and packed again under the top folder `root`."""
    work = dst.parent / (dst.name + ".d")
    with tarfile.open(src) as tar:
        tar.extractall(work, filter="data")
    if change is not None:
        change(work / ROOT)
    files = {str(p.relative_to(work / ROOT)): p for p in (work / ROOT).rglob("*") if p.is_file()}
    write_archive(dst, root, files)
    shutil.rmtree(work)
    return dst


def test_verify_fails_a_release_whose_top_folder_is_not_the_manifest_s_root(release, tmp_path):
    renamed = _repack(release, tmp_path / "renamed.tar.gz", "edgepack-digits-android-9.9.9")
    proc = cli("verify", renamed)
    assert proc.returncode == 1
    assert ("the release folder is 'edgepack-digits-android-9.9.9', but manifest.json names "
            f"'{ROOT}'") in one_line_error(proc)


# --------------------------------------------------------------------------- gzip bombs


class _Zeros:
    """`size` zero bytes, read in pieces: a bomb's content, never held in memory at once."""

    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


BOMB_BYTES = 300_000_000


def _bomb(release: Path, dst: Path, *, name: str, before_manifest: bool) -> Path:
    """The release with a member of BOMB_BYTES zeros (about 0.3 MB compressed) named
    `name`, placed before manifest.json or at the end; a member of the same name in the
    release is replaced."""
    with tarfile.open(release) as tar_in, tarfile.open(dst, "w:gz", compresslevel=6) as tar_out:
        bomb = tarfile.TarInfo(f"{ROOT}/{name}")
        bomb.size = BOMB_BYTES
        for m in tar_in.getmembers():
            if m.name == bomb.name:
                continue
            if before_manifest and m.name == f"{ROOT}/manifest.json":
                tar_out.addfile(bomb, _Zeros(BOMB_BYTES))
            tar_out.addfile(m, tar_in.extractfile(m) if m.isfile() else None)
        if not before_manifest:
            tar_out.addfile(bomb, _Zeros(BOMB_BYTES))
    return dst


BOMBS = {
    "unlisted member after the manifest": ("zeros.bin", False, "zeros.bin: in the archive but not listed in manifest.json"),
    "listed file grown, before the manifest": ("README.md", True, "README.md: 300,000,000 bytes in the archive, manifest.json lists"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_verify_and_diff_stop_a_gzip_bomb_at_its_header_without_writing_it(release, tmp_path, case):
    name, before, message = BOMBS[case]
    bomb = _bomb(release, tmp_path / "bomb.tar.gz", name=name, before_manifest=before)
    assert bomb.stat().st_size < 1024**2
    proc, seconds = _cli_writing_little("verify", bomb, tmp=tmp_path / "tmp")
    assert proc.returncode == 1, proc.stderr
    assert message in one_line_error(proc) and "refusing to extract anything" in proc.stderr
    assert seconds < 10, f"verify took {seconds:.1f} s"
    assert list((tmp_path / "tmp").iterdir()) == [], "an extraction folder was left behind"
    diff, _ = _cli_writing_little("diff", bomb, release, tmp=tmp_path / "tmp")
    assert diff.returncode == 2 and message in one_line_error(diff)


def test_verify_refuses_a_tar_long_name_record_too_large_to_hold_in_memory(release, tmp_path):
    bomb = tmp_path / "longname.tar.gz"
    with tarfile.open(release) as tar_in, tarfile.open(bomb, "w:gz", format=tarfile.GNU_FORMAT) as tar_out:
        for m in tar_in.getmembers():
            tar_out.addfile(m, tar_in.extractfile(m) if m.isfile() else None)
        tar_out.addfile(tarfile.TarInfo(f"{ROOT}/" + "n" * 64 * 1024**2))   # a 64 MB GNU long-name record
    assert bomb.stat().st_size < 1024**2
    proc, _ = _cli_writing_little("verify", bomb, tmp=tmp_path / "tmp")
    assert proc.returncode == 1
    assert "a tar header record of 67,109,376 bytes (a long name or PAX record); refusing to read it" in one_line_error(proc)


# --------------------------------------------------------------------------- malformed manifests


def _not_json(m: dict) -> str:
    return '{"schema": "edgepack.manifest/1", "artifacts": ['


MALFORMED = {
    "not JSON": (_not_json, "manifest.json is not valid JSON|not valid JSON"),
    "no artifacts": (lambda m: {k: v for k, v in m.items() if k != "artifacts"}, "artifacts: missing"),
    "wrong type": (lambda m: {**m, "artifacts": "all"}, "artifacts: Input should be a valid list"),
}


def _write_manifest(folder: Path, change) -> None:
    doc = change(json.loads((folder / "manifest.json").read_text()))
    (folder / "manifest.json").write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2, sort_keys=True))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_line_and_never_exit_4_in_verify_diff_package_and_profile(release, tmp_path, case):
    import re

    change, message = MALFORMED[case]
    bad_release = _repack(release, tmp_path / "bad.tar.gz", ROOT, lambda f: _write_manifest(f, change))
    bad_dist = copy_output(tmp_path) / "android"
    _write_manifest(bad_dist, change)

    verify = cli("verify", bad_release, "--run")
    assert verify.returncode == 1, verify.stderr             # a release that is not one fails verification
    assert re.search(message, one_line_error(verify))
    for args in (("diff", bad_release, release), ("diff", bad_dist, release),
                 ("profile", bad_dist, "--iterations", "1", "--warmup", "0", "--no-record")):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert re.search(message, one_line_error(proc)), args
    for against in (bad_release, bad_dist):
        proc = cli("package", "-t", "android", "-o", built_output(), "--archive", tmp_path / "new.tar.gz",
                   "--against", against)
        assert proc.returncode == 2 and re.search(message, one_line_error(proc))
        assert not (tmp_path / "new.tar.gz").exists(), "package wrote an archive before reading --against"


def _rehashed(folder: Path, rel: str) -> None:
    """After changing `rel`, make the manifest's hashes agree again, as someone who
    re-packs an unsigned release can."""
    import hashlib

    m = json.loads((folder / "manifest.json").read_text())
    digest = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    for e in [m["test_vectors"]["inputs"], m["test_vectors"]["reference"], *m["test_vectors"]["outputs"].values()]:
        if e["file"] == rel:
            e["sha256"] = digest
    for a in m["artifacts"]:
        if a["file"] == rel:
            a["sha256"], a["size_bytes"] = digest, (folder / rel).stat().st_size
    for f in m["package"]["files"]:
        if f["path"] == rel:
            f["sha256"], f["size_bytes"] = digest, (folder / rel).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def test_verify_run_names_a_test_vector_whose_shape_is_not_the_manifest_s(release, tmp_path):
    import numpy as np

    def scalar_outputs(folder: Path) -> None:
        np.save(folder / "testdata" / "digits.onnx.npy", np.float32(1.0), allow_pickle=False)
        _rehashed(folder, "testdata/digits.onnx.npy")

    bad = _repack(release, tmp_path / "scalar.tar.gz", ROOT, scalar_outputs)
    assert cli("verify", bad).returncode == 0           # every hash agrees; only running it can tell
    proc = cli("verify", bad, "--run")
    assert proc.returncode == 1
    assert "testdata/digits.onnx.npy: shape [], manifest.json says [16, 10]" in one_line_error(proc)


# --------------------------------------------------------------------------- links out of a dist


def _link_out(dist: Path, rel: str, outside: Path) -> None:
    """Move `rel` out of the dist (same bytes, so its hash still matches) and leave a
    symbolic link in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(dist / rel, outside)
    (dist / rel).symlink_to(outside)


def test_profile_refuses_an_artifact_or_test_vectors_linked_from_outside_the_dist(tmp_path):
    dist = copy_output(tmp_path) / "android"
    _link_out(dist, "digits.onnx", tmp_path / "elsewhere" / "digits.onnx")
    proc = cli("profile", dist, "--iterations", "1", "--warmup", "0", "--no-record")
    assert proc.returncode == 2
    assert (f"artifact 'digits.onnx' resolves to {tmp_path / 'elsewhere' / 'digits.onnx'}, outside {dist}"
            in one_line_error(proc))

    dist = copy_output(tmp_path / "second") / "android"
    _link_out(dist, "testdata", tmp_path / "elsewhere" / "testdata")
    proc = cli("profile", dist, "--iterations", "1", "--warmup", "0", "--no-record")
    assert proc.returncode == 2
    assert "test inputs 'testdata/inputs.npy' resolves to" in one_line_error(proc)


def test_package_refuses_a_file_linked_from_outside_the_dist_and_writes_nothing(tmp_path):
    out = copy_output(tmp_path)
    _link_out(out / "android", "digits.tflite", tmp_path / "elsewhere" / "digits.tflite")
    proc = cli("package", "-t", "android", "-o", out)
    assert proc.returncode == 2
    assert "artifact 'digits.tflite' resolves to" in one_line_error(proc)
    assert sorted(p.name for p in out.iterdir()) == ["android"]


def test_profile_records_into_the_manifest_without_writing_through_links_in_the_dist(tmp_path):
    dist = copy_output(tmp_path) / "android"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    for name in ("manifest.json.tmp", ".manifest.json.tmp"):   # where a fixed temporary name would go
        (dist / name).symlink_to(precious)
    proc = cli("profile", dist, "--iterations", "2", "--warmup", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert precious.read_text() == "keep me\n"
    rows = [r for a in json.loads((dist / "manifest.json").read_text())["artifacts"] for r in a["measurements"]]
    assert any(r.get("method") == "measured" and r.get("runner") == "host" for r in rows)


def test_verify_run_opens_only_files_inside_the_release_folder(release, tmp_path):
    """Extraction never creates links, so this guards the reader itself: a release
    folder whose test inputs link out of it is refused before they are opened."""
    from edgepack.errors import ConfigError
    from edgepack.release.verification import _run_artifacts

    with tarfile.open(release) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / ROOT
    _link_out(folder, "testdata/inputs.npy", tmp_path / "elsewhere" / "inputs.npy")
    manifest = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(ConfigError, match=r"test vector 'testdata/inputs.npy' resolves to .*elsewhere/inputs.npy, outside"):
        list(_run_artifacts(folder, manifest, ARCHIVE))


# --------------------------------------------------------------------------- authenticity


def test_a_stripped_and_rehashed_release_passes_only_as_unauthenticated(tmp_path):
    """Someone removes the signature, changes an artifact and re-hashes the manifest:
    without a key every hash agrees, so verify must say that nobody's authorship was
    checked; with a key, or --require-signature, it fails."""
    from edgepack.release.signing import keygen

    key = keygen(tmp_path / "release")
    signed = tmp_path / "signed" / ARCHIVE
    assert cli("package", "-t", "android", "-o", built_output(), "--sign-key", key.private_key,
               "--archive", signed).returncode == 0

    def strip_and_swap(folder: Path) -> None:
        (folder / "manifest.json.sig").unlink()
        data = bytearray((folder / "digits.tflite").read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / "digits.tflite").write_bytes(bytes(data))
        _rehashed(folder, "digits.tflite")
        m = json.loads((folder / "manifest.json").read_text())
        m["package"]["signature"] = None
        (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")

    stripped = _repack(signed, tmp_path / "stripped.tar.gz", ROOT, strip_and_swap)
    plain = cli("verify", stripped)
    assert plain.returncode == 0, plain.stderr
    assert "verified integrity only; authenticity NOT checked: the release is not signed;" in plain.stdout
    doc = json.loads(cli("verify", stripped, "--json").stdout)
    assert doc["authenticated"] is False and doc["authenticity"].startswith("NOT checked: the release is not signed")

    for args in (("--public-key", key.public_key), ("--public-key", key.public_key, "--require-signature")):
        proc = cli("verify", stripped, *args)
        assert proc.returncode == 1
        assert "no signature (manifest.json.sig) in the release, and --public-key requires one" in one_line_error(proc)
    no_key = cli("verify", stripped, "--require-signature")
    assert no_key.returncode == 2 and "--require-signature needs --public-key KEY.pub" in one_line_error(no_key)

    genuine = cli("verify", signed, "--public-key", key.public_key, "--require-signature", "--json")
    assert genuine.returncode == 0, genuine.stderr
    doc = json.loads(genuine.stdout)
    assert doc["authenticated"] is True and doc["authenticity"] == (
        f"checked: the ed25519 signature is valid for key sha256 {key.fingerprint}")
    unchecked = cli("verify", signed)
    assert unchecked.returncode == 0
    assert "authenticity NOT checked: the release is signed, but no --public-key was given" in unchecked.stdout
