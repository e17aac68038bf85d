"""Reproducible release archives, and reading them back without trusting them.

Writing: the same files give the same bytes, wherever and whenever they are packed:
entries sorted, every mtime the same (SOURCE_DATE_EPOCH when set), owner 0:0 without
names, modes 0644/0755, a plain ustar/PAX-free layout, and a gzip header with neither a
timestamp nor a file name.

Reading: every member header is checked before a single byte is extracted, and the
extraction goes into a fresh temporary folder only. Rejected: absolute paths, `..`,
links of either kind, devices and FIFOs, sparse files, duplicates, and members or totals
larger than the limits. The gzip stream is read to its end first, so a truncated or
corrupted archive fails with its own message instead of a confusing tar error.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from edgepack.errors import ConfigError

# 2020-01-01T00:00:00Z: a fixed, plausible date for when SOURCE_DATE_EPOCH is not set
# (tar readers warn about mtimes of 0 and some show 1970 as "missing").
DEFAULT_EPOCH = 1577836800
MAX_MEMBER_BYTES = 2 * 1024**3      # the largest artifact we expect is well under this
MAX_TOTAL_BYTES = 8 * 1024**3
MAX_MEMBERS = 10_000
GZIP_LEVEL = 9
CHUNK = 1 << 20


class ArchiveError(ConfigError):
    """An archive that cannot be read safely: corrupt, truncated, or with a member that
    could write outside the extraction folder. Bad input (exit 2) unless a caller that is
    verifying a release rewords it as a failed verification."""


def source_date_epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return DEFAULT_EPOCH
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r}: expected a whole number of seconds since 1970") from None
    if value < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r}: must not be negative")
    return value


# ----------------------------------------------------------------------------- writing


def _info(name: str, *, is_dir: bool, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = 0 if is_dir else size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(out: Path, root_name: str, files: dict[str, Path], *, mtime: int | None = None) -> None:
    """Pack `files` (archive path relative to `root_name` -> file on disk) into `out`,
    under one top-level folder `root_name/`. Written to a sibling temporary file and
    renamed, so `out` is either the old archive or the complete new one."""
    mtime = source_date_epoch() if mtime is None else mtime
    if "/" in root_name:
        raise ArchiveError(f"package: release folder {root_name!r} must be one folder name, not a path")
    _check_relative(root_name, where="package")
    for rel in files:
        _check_relative(rel, where="package")
    dirs = {root_name}
    for rel in files:
        parent = posixpath.dirname(rel)
        while parent:
            dirs.add(f"{root_name}/{parent}")
            parent = posixpath.dirname(parent)
    entries = sorted([(d, None) for d in dirs] + [(f"{root_name}/{rel}", src) for rel, src in files.items()])

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of the build's name and time.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
                # GNU format, not PAX: PAX records can carry atime/ctime, and GNU's
                # long-name entries carry no timestamps at all.
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                    for name, src in entries:
                        if src is None:
                            tar.addfile(_info(name, is_dir=True, size=0, mtime=mtime))
                        else:
                            with open(src, "rb") as f:
                                tar.addfile(_info(name, is_dir=False, size=os.fstat(f.fileno()).st_size, mtime=mtime), f)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Member:
    name: str          # path inside the archive, e.g. "edgepack-digits-android-1.0.0/manifest.json"
    is_dir: bool
    size: int


def _check_relative(name: str, *, where: str) -> str:
    """The one rule for paths inside an archive: relative, forward slashes, no '..',
    nothing that could resolve outside the folder it is extracted into."""
    if not name or name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{where}: member {name!r} has an absolute path; refusing to extract anything")
    if "\\" in name or "\x00" in name:
        raise ArchiveError(f"{where}: member {name!r} has a backslash or NUL in its name; refusing to extract anything")
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        raise ArchiveError(f"{where}: member {name!r} climbs out with '..'; refusing to extract anything")
    if any(p in ("", ".") for p in parts):
        raise ArchiveError(f"{where}: member {name!r} has an empty or '.' path component; refusing to extract anything")
    return "/".join(parts)


def _check_gzip_stream(path: Path, *, max_total: int) -> None:
    """Decompress the whole stream once: catches truncation and CRC errors up front."""
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                total += len(chunk)
                if total > max_total:
                    raise ArchiveError(f"{path.name}: decompresses to more than {max_total:,} bytes; refusing to read it")
    except EOFError:
        raise ArchiveError(f"{path.name}: the gzip stream is truncated (the archive is incomplete)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ArchiveError(f"{path.name}: not a valid gzip file: {e}") from None


def list_members(path: Path, *, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES) -> list[Member]:
    """Check every header of a .tar.gz without extracting anything; raise on the first
    unsafe member. Only regular files and folders are accepted."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such archive")
    _check_gzip_stream(path, max_total=max_total + MAX_MEMBERS * 1024)
    members: list[Member] = []
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            # next() reads one header at a time, so a bad header is caught before the
            # reader walks past (decompresses) the data it announces.
            while (info := tar.next()) is not None:
                where = path.name
                if info.issym() or info.islnk():
                    raise ArchiveError(f"{where}: member {info.name!r} is a {'symbolic' if info.issym() else 'hard'} link "
                                       f"(to {info.linkname!r}); refusing to extract anything")
                if info.ischr() or info.isblk() or info.isfifo():
                    raise ArchiveError(f"{where}: member {info.name!r} is a device or FIFO; refusing to extract anything")
                if info.issparse() or not (info.isreg() or info.isdir()):
                    raise ArchiveError(f"{where}: member {info.name!r} is not a regular file or folder (tar type {info.type!r}); "
                                       "refusing to extract anything")
                name = _check_relative(info.name, where=where)
                if name in seen:
                    raise ArchiveError(f"{where}: member {name!r} appears twice; refusing to extract anything")
                seen.add(name)
                if info.size > max_member:
                    raise ArchiveError(f"{where}: member {name!r} is {info.size:,} bytes, over the {max_member:,}-byte limit; "
                                       "refusing to extract anything")
                total += info.size
                if total > max_total:
                    raise ArchiveError(f"{where}: members add up to more than {max_total:,} bytes; refusing to extract anything")
                if len(seen) > MAX_MEMBERS:
                    raise ArchiveError(f"{where}: more than {MAX_MEMBERS} members; refusing to extract anything")
                members.append(Member(name, info.isdir(), 0 if info.isdir() else info.size))
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ArchiveError(f"{path.name}: not a readable tar archive: {e}") from None
    if not members:
        raise ArchiveError(f"{path.name}: the archive is empty")
    return members


@contextmanager
def extracted(path: Path, **limits) -> Iterator[tuple[Path, list[Member]]]:
    """Check the archive, then extract it into a new temporary folder that is removed on
    exit. Yields (folder, members). Files are written by this code, not tarfile's
    extract(), so only the checked names and regular contents can ever be created."""
    members = list_members(path, **limits)
    wanted = {m.name: m for m in members}
    tmp = Path(tempfile.mkdtemp(prefix="edgepack-unpack-"))
    try:
        root = tmp.resolve()
        for m in members:
            if m.is_dir:
                (root / m.name).mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, mode="r:gz") as tar:
            while (info := tar.next()) is not None:
                name = _check_relative(info.name, where=path.name)
                m = wanted.get(name)
                if m is None or m.is_dir:
                    continue
                dest = (root / name).resolve()
                if root not in dest.parents:  # defence in depth; _check_relative already rules this out
                    raise ArchiveError(f"{path.name}: member {name!r} resolves outside the extraction folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                if src is None:
                    raise ArchiveError(f"{path.name}: member {name!r} has no readable content")
                written = 0
                # "xb": never follow or overwrite anything already there.
                with src, open(dest, "xb") as out:
                    while chunk := src.read(CHUNK):
                        written += len(chunk)
                        if written > m.size:
                            raise ArchiveError(f"{path.name}: member {name!r} holds more bytes than its header says")
                        out.write(chunk)
                os.chmod(dest, 0o644)
        yield root, members
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{path.name}: not a readable tar archive: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_member_bytes(path: Path, name: str, *, max_bytes: int = 64 * 1024**2) -> bytes:
    """One member's bytes (e.g. the manifest for a diff), after checking the whole archive."""
    members = {m.name: m for m in list_members(path)}
    m = members.get(name)
    if m is None or m.is_dir:
        raise ArchiveError(f"{path.name}: has no file {name!r}")
    if m.size > max_bytes:
        raise ArchiveError(f"{path.name}: {name!r} is {m.size:,} bytes, over the {max_bytes:,}-byte limit for this read")
    with tarfile.open(path, mode="r:gz") as tar:
        while (info := tar.next()) is not None:
            if info.name.rstrip("/") == name:
                src = tar.extractfile(info)
                return src.read() if src is not None else b""
    raise ArchiveError(f"{path.name}: has no file {name!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["ArchiveError", "Member", "write_archive", "list_members", "extracted", "read_member_bytes",
           "source_date_epoch", "sha256_file", "sha256_bytes"]
