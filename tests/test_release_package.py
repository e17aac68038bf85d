"""`edgepack package` and `edgepack verify` on a real build of the digits sample, through
the CLI as a user runs them: exit codes, one-line errors, nothing written outside a
temporary folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.release.archive import write_archive
from edgepack.release.signing import keygen
from release_helpers import built_output, cli, copy_output, one_line_error

pytestmark = pytest.mark.slow

ROOT = "edgepack-digits-android-1.0.0"
ARCHIVE = f"{ROOT}.tar.gz"
EXPECTED_FILES = ["README.md", "digits.onnx", "digits.pte", "digits.tflite", "manifest.json", "manifest.json.sig",
                  "report.html", "testdata/digits.onnx.npy", "testdata/digits.pte.npy", "testdata/digits.tflite.npy",
                  "testdata/inputs.npy", "testdata/reference.npy"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder / "release"), keygen(folder / "other")


@pytest.fixture(scope="module")
def release(tmp_path_factory, keys):
    """A signed release of the shared build, packaged once for the read-only tests."""
    out = tmp_path_factory.mktemp("rel")
    proc = cli("package", "-t", "android", "-o", built_output(), "--sign-key", keys[0].private_key,
               "--archive", out / ARCHIVE, "--json")
    assert proc.returncode == 0, proc.stderr
    return out / ARCHIVE


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_twice_gives_the_same_archive_bytes_even_from_a_copied_dist(tmp_path, keys):
    copy = copy_output(tmp_path)
    for p in copy.rglob("*"):                  # a fresh checkout or copy has other mtimes
        os.utime(p, (1234567, 1234567))
    a = cli("package", "-t", "android", "-o", built_output(), "--sign-key", keys[0].private_key, "--archive", tmp_path / "a.tar.gz")
    b = cli("package", "-t", "android", "-o", copy, "--sign-key", keys[0].private_key, "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    doc = json.loads(b.stdout)
    assert doc["archive"] == str(copy / ARCHIVE)
    assert sha256(tmp_path / "a.tar.gz") == sha256(copy / ARCHIVE) == doc["sha256"]


def test_package_holds_exactly_what_an_app_team_needs(release, tmp_path):
    (built_output() / "android" / "notes.tmp").write_text("scratch")  # stray files in dist stay out
    try:
        proc = cli("package", "-t", "android", "-o", built_output(), "--archive", tmp_path / "r.tar.gz")
        assert proc.returncode == 0, proc.stderr
    finally:
        (built_output() / "android" / "notes.tmp").unlink()
    with tarfile.open(release) as tar:
        names = sorted(m.name[len(ROOT) + 1:] for m in tar.getmembers() if m.isfile())
    assert names == EXPECTED_FILES
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        unsigned = sorted(m.name[len(ROOT) + 1:] for m in tar.getmembers() if m.isfile())
    assert unsigned == [n for n in EXPECTED_FILES if n != "manifest.json.sig"]


def test_verify_accepts_the_release_with_its_key_and_reports_json(release, keys):
    proc = cli("verify", release, "--public-key", keys[0].public_key, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["signature"] == "valid" and doc["files_checked"] == len(EXPECTED_FILES) - 2
    assert doc["key_fingerprint"] == keys[0].fingerprint


def test_verify_run_replays_every_artifact_on_the_bundled_inputs(release, keys):
    proc = cli("verify", release, "--public-key", keys[0].public_key, "--run", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert sorted(r["file"] for r in runs) == ["digits.onnx", "digits.pte", "digits.tflite"]
    assert all(r["ok"] and r["samples"] == 16 and r["max_abs_diff"] <= r["atol"] for r in runs)


def test_verify_run_fails_when_an_artifact_no_longer_computes_its_recorded_outputs(tmp_path, keys):
    """A consistent, correctly signed release whose recorded outputs were shifted: only
    re-running the artifact can notice."""
    dist = copy_output(tmp_path) / "android"
    manifest = json.loads((dist / "manifest.json").read_text())
    entry = manifest["test_vectors"]["outputs"]["digits.onnx"]
    shifted = np.load(dist / entry["file"]) + 1.0
    np.save(dist / entry["file"], shifted.astype(np.float32), allow_pickle=False)
    entry["sha256"] = sha256(dist / entry["file"])
    (dist / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    assert cli("package", "-t", "android", "-o", dist.parent, "--sign-key", keys[0].private_key).returncode == 0
    ok = cli("verify", dist.parent / ARCHIVE, "--public-key", keys[0].public_key)
    assert ok.returncode == 0, ok.stderr                       # hashes and signature are all fine
    proc = cli("verify", dist.parent / ARCHIVE, "--public-key", keys[0].public_key, "--run")
    assert proc.returncode == 1
    assert "no longer compute the recorded outputs" in proc.stderr and "digits.onnx: max |difference| 1" in proc.stderr


# --------------------------------------------------------------------------- tampering


def _rewrite(src: Path, dst: Path, change) -> Path:
    """Unpack `src`, let `change(folder)` edit it, and repack it as a normal tar.gz."""
    work = dst.parent / (dst.name + ".d")
    with tarfile.open(src) as tar:
        tar.extractall(work, filter="data")
    change(work / ROOT)
    files = {str(p.relative_to(work / ROOT)): p for p in (work / ROOT).rglob("*") if p.is_file()}
    write_archive(dst, ROOT, files)
    shutil.rmtree(work)
    return dst


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _tamper_manifest(folder: Path) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m["artifacts"][0]["accuracy"] = 1.0
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


TAMPERING = {
    "artifact": (lambda f: _flip_byte(f / "digits.tflite"), "digits.tflite: sha256"),
    "manifest": (_tamper_manifest, "the signature does not match"),
    "extra file": (lambda f: (f / "backdoor.so").write_bytes(b"\x7fELF"), "backdoor.so: in the archive but not listed"),
    "missing file": (lambda f: (f / "digits.pte").unlink(), "digits.pte: listed in manifest.json but missing"),
    "missing signature": (lambda f: (f / "manifest.json.sig").unlink(), "no signature (manifest.json.sig)"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_fails_with_one_line_and_exit_1_when_tampered(release, keys, tmp_path, case):
    change, message = TAMPERING[case]
    bad = _rewrite(release, tmp_path / "bad.tar.gz", change)
    proc = cli("verify", bad, "--public-key", keys[0].public_key, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"], "verify wrote next to the archive"


def test_verify_detects_a_tampered_artifact_even_without_a_key(release, tmp_path):
    bad = _rewrite(release, tmp_path / "bad.tar.gz", lambda f: _flip_byte(f / "digits.onnx"))
    proc = cli("verify", bad)
    assert proc.returncode == 1 and "digits.onnx: sha256" in one_line_error(proc)


def test_verify_rejects_the_wrong_public_key(release, keys):
    proc = cli("verify", release, "--public-key", keys[1].public_key)
    assert proc.returncode == 1
    assert "signed with another key" in one_line_error(proc)


def _append_member(src: Path, dst: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w:gz") as tar_out:
        for m in tar_in.getmembers():
            tar_out.addfile(m, tar_in.extractfile(m) if m.isfile() else None)
        info.size = len(data)
        tar_out.addfile(info, io.BytesIO(data) if data else None)
    return dst


def test_verify_refuses_dotdot_and_symlink_members_and_extracts_nothing(release, tmp_path):
    evil = tarfile.TarInfo(f"{ROOT}/../../escaped.txt")
    dotdot = _append_member(release, tmp_path / "dotdot.tar.gz", evil, b"owned\n")
    link = tarfile.TarInfo(f"{ROOT}/digits.so")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    symlink = _append_member(release, tmp_path / "symlink.tar.gz", link)
    for archive, message in ((dotdot, "climbs out with '..'"), (symlink, "is a symbolic link")):
        proc = cli("verify", archive, cwd=tmp_path)
        assert proc.returncode == 1
        assert message in one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dotdot.tar.gz", "symlink.tar.gz"]
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_verify_reports_a_truncated_archive(release, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(release.read_bytes()[: release.stat().st_size * 2 // 3])
    proc = cli("verify", cut)
    assert proc.returncode == 1 and "truncated" in one_line_error(proc)


def test_bad_input_exits_2_with_one_line(tmp_path, keys):
    no_build = cli("package", "-t", "android", "-o", tmp_path / "nothing-built")
    assert no_build.returncode == 2 and "no build to package" in one_line_error(no_build)
    missing = cli("verify", tmp_path / "missing.tar.gz")
    assert missing.returncode == 2 and "no such archive" in one_line_error(missing)
    wrong_kind = cli("package", "-t", "android", "-o", built_output(), "--sign-key", keys[0].public_key,
                     "--archive", tmp_path / "x.tar.gz")
    assert wrong_kind.returncode == 2 and "not a PEM private key" in one_line_error(wrong_kind)
    assert not (tmp_path / "x.tar.gz").exists()


def test_package_refuses_a_dist_changed_after_the_build(tmp_path):
    dist = copy_output(tmp_path)
    _flip_byte(dist / "android" / "digits.pte")
    proc = cli("package", "-t", "android", "-o", dist)
    assert proc.returncode == 2 and "digits.pte: sha256 does not match manifest.json" in one_line_error(proc)


def test_package_against_a_previous_release_exits_1_on_a_regression(tmp_path, release):
    dist = copy_output(tmp_path) / "android"
    m = json.loads((dist / "manifest.json").read_text())
    m["artifacts"][0]["accuracy"] -= 0.02      # as if this build lost 2 points on the LiteRT artifact
    (dist / "manifest.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    proc = cli("package", "-t", "android", "-o", dist.parent, "--against", release, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["diff"]["regressions"] == 1
    assert [c["item"] for c in doc["diff"]["changes"] if c["regression"]] == ["tflite int8"]
    same = cli("package", "-t", "android", "-o", built_output(), "--archive", tmp_path / "same.tar.gz", "--against", release)
    assert same.returncode == 0, same.stdout + same.stderr
