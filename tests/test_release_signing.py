"""Ed25519 keys and signatures over release manifests."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from edgepack.errors import ConfigError
from edgepack.release import signing


def test_keygen_writes_private_key_0600_and_refuses_to_overwrite(tmp_path):
    pair = signing.keygen(tmp_path / "release")
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    assert pair.public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(pair.fingerprint) == 64
    with pytest.raises(ConfigError, match="already exist; pass --force"):
        signing.keygen(tmp_path / "release")
    again = signing.keygen(tmp_path / "release", force=True)
    assert again.fingerprint != pair.fingerprint


def test_signature_holds_for_the_signed_bytes_only_and_the_matching_key_only(tmp_path):
    one, two = signing.keygen(tmp_path / "one"), signing.keygen(tmp_path / "two")
    key = signing.load_private_key(one.private_key)
    data = b'{"schema": "edgepack.manifest/1"}\n'
    sig = signing.sign(key, data)
    assert len(sig) == signing.SIGNATURE_BYTES
    assert signing.verify(signing.load_public_key(one.public_key), data, sig)
    assert not signing.verify(signing.load_public_key(one.public_key), data.replace(b"1", b"2"), sig)
    assert not signing.verify(signing.load_public_key(two.public_key), data, sig)
    assert not signing.verify(signing.load_public_key(one.public_key), data, sig[:-1])


def test_key_loading_names_the_mistake(tmp_path):
    pair = signing.keygen(tmp_path / "k")
    with pytest.raises(ConfigError, match="this is a private key"):
        signing.load_public_key(pair.private_key)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        signing.load_private_key(pair.public_key)
    with pytest.raises(ConfigError, match="no such file"):
        signing.load_private_key(tmp_path / "missing.key")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        signing.load_public_key(tmp_path / "junk.pub")


def test_openssl_verifies_an_edgepack_signature(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pair = signing.keygen(tmp_path / "k")
    data = tmp_path / "manifest.json"
    data.write_bytes(b'{"a": 1}\n')
    (tmp_path / "manifest.json.sig").write_bytes(signing.sign(signing.load_private_key(pair.private_key), data.read_bytes()))
    proc = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pair.public_key), "-rawin",
                           "-in", str(data), "-sigfile", str(tmp_path / "manifest.json.sig")], capture_output=True, text=True)
    assert proc.returncode == 0 and "Signature Verified Successfully" in proc.stdout, proc.stdout + proc.stderr
    data.write_bytes(b'{"a": 2}\n')
    proc = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pair.public_key), "-rawin",
                           "-in", str(data), "-sigfile", str(tmp_path / "manifest.json.sig")], capture_output=True, text=True)
    assert proc.returncode != 0


def test_keygen_never_writes_a_key_through_a_symbolic_link(tmp_path):
    from release_helpers import cli, one_line_error

    victim = tmp_path / "victim.txt"
    victim.write_text("not a key\n")
    (tmp_path / "k.key").symlink_to(victim)
    proc = cli("keygen", tmp_path / "k", "--force")
    assert proc.returncode == 2
    assert f"k.key is a symbolic link (to {victim}); refusing to write a key through it" in one_line_error(proc)
    assert victim.read_text() == "not a key\n" and (tmp_path / "k.key").is_symlink()
    assert not (tmp_path / "k.pub").exists()

    (tmp_path / "d.pub").symlink_to(tmp_path / "does-not-exist-yet")   # dangling: exists() is False
    proc = cli("keygen", tmp_path / "d")
    assert proc.returncode == 2 and "d.pub is a symbolic link" in one_line_error(proc)
    assert not (tmp_path / "does-not-exist-yet").exists() and not (tmp_path / "d.key").exists()


def test_keygen_force_replaces_a_key_file_by_name_not_the_file_another_name_shares(tmp_path):
    from release_helpers import cli

    first = signing.keygen(tmp_path / "k")
    shared = tmp_path / "backup-of-k.key"
    os.link(first.private_key, shared)          # a second name for the same file
    before = shared.read_bytes()
    proc = cli("keygen", tmp_path / "k", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert shared.read_bytes() == before, "the old key was overwritten in place"
    assert first.private_key.read_bytes() != before
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.public_key.stat().st_mode) == 0o644
    assert signing.load_private_key(first.private_key) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup-of-k.key", "k.key", "k.pub"]
