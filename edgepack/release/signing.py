"""Ed25519 signatures over a release's manifest.

The manifest lists the sha256 of every other file in the release, so signing its exact
bytes signs the whole release. The signature file holds the raw 64-byte signature, which
OpenSSL 3 checks without edgepack:

    openssl pkeyutl -verify -pubin -inkey release.pub -rawin \\
        -in manifest.json -sigfile manifest.json.sig

Keys are PEM: PKCS#8 for the private key, SubjectPublicKeyInfo for the public one.
`cryptography` is imported inside the functions so `edgepack --help` stays fast.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import ConfigError

ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path
    fingerprint: str


def _raw_public(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key) -> str:
    """sha256 of the raw 32-byte public key: what the manifest records, so a reader sees
    which key a release claims to be signed with before checking it."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()


def _refuse_link_or_folder(path: Path) -> None:
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing to write a key through it: "
                          "remove the link or choose another NAME")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} exists and is not a regular file; choose another NAME")


def _write_key_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write a key file with `mode` from its creation on, never through a link.

    A new name is created with O_EXCL|O_NOFOLLOW: an existing file or link fails. With
    `replace`, the key goes to a new temporary file beside `path` (O_EXCL too) that is
    renamed over it: the rename replaces whatever is at `path` as a name, never a file
    a link there points at, and a reader sees the old key or the whole new one."""
    if not replace:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except FileExistsError:
            raise ConfigError(f"{path} already exists; pass --force to replace it") from None
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)   # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keygen(stem: Path, *, force: bool = False) -> KeyPair:
    """Write `<stem>.key` (private, mode 0600) and `<stem>.pub`. Refuses to overwrite an
    existing key unless `force`: losing a release key by a typo cannot be undone. Never
    writes through a symbolic link, with or without `force`: a link named like the key
    could otherwise hand the private key to whatever file it points at."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = stem.with_name(stem.name + ".key")
    public_path = stem.with_name(stem.name + ".pub")
    for p in (private_path, public_path):
        _refuse_link_or_folder(p)
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists()]
        if existing:
            raise ConfigError(f"{' and '.join(existing)} already exist; pass --force to replace them")
    if not private_path.parent.is_dir():
        raise ConfigError(f"{private_path.parent}: no such folder for the key files")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_key_file(private_path, private_pem, 0o600, replace=force)
    _write_key_file(public_path, public_pem, 0o644, replace=force)
    return KeyPair(private_path, public_path, fingerprint(key.public_key()))


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not path.is_file():
        raise ConfigError(f"--sign-key {path}: no such file")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise ConfigError(f"--sign-key {path}: the key is encrypted; edgepack signs with unencrypted PKCS#8 Ed25519 keys "
                          "(keep the file mode 0600, or in a CI secret)") from None
    except ValueError as e:
        raise ConfigError(f"--sign-key {path}: not a PEM private key ({e}); create one with `edgepack keygen NAME`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"--sign-key {path}: a {type(key).__name__.removeprefix('_')} key; edgepack signs with Ed25519 only")
    return key


def load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not path.is_file():
        raise ConfigError(f"--public-key {path}: no such file")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"--public-key {path}: this is a private key; pass the .pub file and keep the .key file secret")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise ConfigError(f"--public-key {path}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"--public-key {path}: a {type(key).__name__.removeprefix('_')} key; edgepack verifies Ed25519 only")
    return key


def sign(private_key, data: bytes) -> bytes:
    return private_key.sign(data)


def verify(public_key, data: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
