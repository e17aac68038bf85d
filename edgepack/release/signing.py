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


def keygen(stem: Path, *, force: bool = False) -> KeyPair:
    """Write `<stem>.key` (private, mode 0600) and `<stem>.pub`. Refuses to overwrite an
    existing key unless `force`: losing a release key by a typo cannot be undone."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = stem.with_name(stem.name + ".key")
    public_path = stem.with_name(stem.name + ".pub")
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
    # O_EXCL unless forced, and mode 0600 from creation: never a moment when it is world-readable.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public_pem)
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
