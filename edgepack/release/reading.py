"""Reading a release archive without trusting it: the manifest first, then only what it
declares.

One streaming pass (`scan_release`) checks every header, finds `<root>/manifest.json`
and its signature, and validates the manifest. From then on a member that
`package.files` does not list, or whose size differs from the listing, stops the pass
at its header, before a byte of it is decompressed. Members met before the manifest
(entries are sorted, so artifacts named before `manifest.json` come first) are only
decompressed, never written, and are held to the listing as soon as it is read. So
what a reader extracts is bounded by what the manifest declares, and a few compressed
bytes that claim gigabytes stop at their header with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import ConfigError
from edgepack.release.archive import ArchiveError, Member, stream_members
from edgepack.release.packaging import MANIFEST_FILE, SIGNATURE_FILE

# A manifest of many artifacts and measurement rows is some hundred kilobytes; a raw
# Ed25519 signature is 64 bytes. Anything far larger is not what edgepack writes.
MANIFEST_LIMIT = 16 * 1024**2
SIGNATURE_LIMIT = 4096


@dataclass(frozen=True)
class ReleaseScan:
    root: str                         # the archive's one top folder, equal to manifest.package.root
    members: tuple[Member, ...]
    manifest: dict                    # validated through the manifest model
    manifest_bytes: bytes             # exactly as stored: what the signature covers
    signature: bytes | None
    listed: dict[str, dict]           # package.files by path
    present: frozenset[str]           # files in the archive besides manifest.json and its signature

    @property
    def expected(self) -> dict[str, int]:
        """Archive member name -> size of every file there is to extract."""
        sizes = {f"{self.root}/{p}": self.listed[p]["size_bytes"] for p in self.present}
        sizes[f"{self.root}/{MANIFEST_FILE}"] = len(self.manifest_bytes)
        if self.signature is not None:
            sizes[f"{self.root}/{SIGNATURE_FILE}"] = len(self.signature)
        return sizes


def parse_manifest_bytes(raw: bytes, *, what: str) -> dict:
    from edgepack.release.manifest import check_manifest

    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConfigError(f"{what} is not valid JSON: nested too deeply") from None
    return check_manifest(doc, what=what)


def _read(chunks, member: Member, limit: int, where: str) -> bytes:
    if member.size > limit:
        raise ArchiveError(f"{where}: {member.name!r} is {member.size:,} bytes, over the {limit:,}-byte limit for it; "
                           "refusing to read it")
    return b"".join(chunks())


def scan_release(path: Path) -> ReleaseScan:
    """Check a release archive in one pass without writing anything; see the module
    docstring. Raises ArchiveError for an unsafe, corrupt or over-long archive and
    ConfigError for a manifest that does not validate."""
    where = path.name
    root: str | None = None
    members: list[Member] = []
    early: list[Member] = []          # files met before the manifest, checked once it is read
    manifest = manifest_bytes = signature = None
    listed: dict[str, dict] = {}
    present: set[str] = set()

    def within_listing(m: Member) -> None:
        rel = m.name[len(root) + 1:]
        entry = listed.get(rel)
        if entry is None:
            raise ArchiveError(f"{where}: {rel}: in the archive but not listed in {MANIFEST_FILE}; refusing to extract anything")
        if m.size != entry["size_bytes"]:
            raise ArchiveError(f"{where}: {rel}: {m.size:,} bytes in the archive, {MANIFEST_FILE} lists "
                               f"{entry['size_bytes']:,}; refusing to extract anything")
        present.add(rel)

    for m, chunks in stream_members(path):
        top, _, rel = m.name.partition("/")
        if root is None:
            root = top
        elif top != root:
            raise ArchiveError(f"{where}: expected one release folder at the top, found {root!r} and {top!r}")
        if not rel:
            if not m.is_dir:
                raise ArchiveError(f"{where}: {m.name!r} is a file at the top; a release holds one folder "
                                   "edgepack-<project>-<target>-<version>/")
            members.append(m)
            continue
        members.append(m)
        if m.is_dir:
            continue
        if rel == MANIFEST_FILE:
            manifest_bytes = _read(chunks, m, MANIFEST_LIMIT, where)
            manifest = parse_manifest_bytes(manifest_bytes, what=f"{where}: {MANIFEST_FILE}")
            pkg = manifest.get("package")
            if pkg is None:
                raise ArchiveError(f"{where}: {MANIFEST_FILE} has no 'package' section; it is a build manifest, not a release")
            if pkg["root"] != root:
                raise ArchiveError(f"{where}: the release folder is {root!r}, but {MANIFEST_FILE} names {pkg['root']!r}")
            listed = {f["path"]: f for f in pkg["files"]}
            for e in early:
                within_listing(e)
        elif rel == SIGNATURE_FILE:
            signature = _read(chunks, m, SIGNATURE_LIMIT, where)
        elif manifest is None:
            early.append(m)
        else:
            within_listing(m)
    if manifest is None:
        raise ArchiveError(f"{where}: no {root}/{MANIFEST_FILE}; this is not an edgepack release")
    return ReleaseScan(root, tuple(members), manifest, manifest_bytes, signature, listed, frozenset(present))


def read_listed_files(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of some files of a release archive, by their path inside the release.
    The archive is scanned and held to its manifest first; a wanted file must be listed
    there and is read up to its listed size, never more."""
    scan = scan_release(path)
    missing = sorted(w for w in wanted if w not in scan.present)
    if missing:
        raise ArchiveError(f"{path.name}: {missing[0]}: not in the release")
    found: dict[str, bytes] = {}
    for m, chunks in stream_members(path):
        rel = m.name[len(scan.root) + 1:]
        if rel in wanted and not m.is_dir:
            found[rel] = _read(chunks, m, scan.listed[rel]["size_bytes"], path.name)
        if len(found) == len(wanted):
            break
    return found
