"""Reproducible release archives, and reading them back without trusting them.

Writing: the same files give the same bytes, wherever and whenever they are packed:
entries sorted, every mtime the same (SOURCE_DATE_EPOCH when set), owner 0:0 without
names, modes 0644/0755, a plain ustar/PAX-free layout, and a gzip header with neither a
timestamp nor a file name.

Reading: one forward pass over the stream (`stream_members`) checks each member's
header before any of its bytes are decompressed, so a reader can stop at the first
member it did not expect; extraction goes into a fresh temporary folder only, after
every header was checked. Rejected: absolute paths, `..`, links of either kind, devices
and FIFOs, sparse files, duplicates, members or totals larger than the limits, and tar
records (long names, PAX) too large to hold in memory. The gzip stream is read to its
end, so a truncated or corrupted archive fails with its own message instead of a
confusing tar error.
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
from typing import Callable, Iterator

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


class _MetadataBound:
    """The decompressed stream as tarfile reads it, refusing any single read over CHUNK
    bytes. tarfile reads a GNU long name or a PAX record into memory in one read of the
    size its header claims; every other read is a 512-byte header or a CHUNK of member
    data (this module never asks for more), so a huge one can only be such a record: a
    few compressed bytes that would otherwise claim gigabytes of memory."""

    def __init__(self, raw, where: str):
        self._raw = raw
        self._where = where

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK:
            raise ArchiveError(f"{self._where}: a tar header record of {size:,} bytes (a long name or PAX record); "
                               "refusing to read it")
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < self._raw.tell():   # forward only: the stream is read once
            raise ArchiveError(f"{self._where}: the tar reader went back in the stream; refusing to read it")
        return self._raw.seek(offset)

    def tell(self) -> int:
        return self._raw.tell()


def _checked(info: tarfile.TarInfo, *, where: str, seen: set[str], max_member: int) -> Member:
    """The one header check: only regular files and folders, safe relative names, each
    once, none over `max_member` bytes."""
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
    if len(seen) > MAX_MEMBERS:
        raise ArchiveError(f"{where}: more than {MAX_MEMBERS} members; refusing to extract anything")
    if info.size > max_member:
        raise ArchiveError(f"{where}: member {name!r} is {info.size:,} bytes, over the {max_member:,}-byte limit; "
                           "refusing to extract anything")
    return Member(name, info.isdir(), 0 if info.isdir() else info.size)


# What may follow the tar's end-of-archive blocks in the gzip stream: tar pads the
# archive to a 10 KiB record; anything much longer was not written by a tar writer.
TRAILER_LIMIT = 64 * 1024


def stream_members(path: Path, *, max_member: int = MAX_MEMBER_BYTES,
                   max_total: int = MAX_TOTAL_BYTES) -> Iterator[tuple[Member, Callable[[], Iterator[bytes]]]]:
    """Each member in archive order, with a function that yields its bytes in chunks.

    One pass over the stream, so a caller can stop at any header before a single byte
    of that member is decompressed: the next member's data is only read when the caller
    asks for the next member. Every header passes `_checked` first. After the last
    member the rest of the gzip stream is read, so a truncated or corrupted archive
    fails here too, with its own message."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such archive")
    where = path.name
    seen: set[str] = set()
    total = 0
    count = 0
    try:
        with gzip.open(path, "rb") as gz, tarfile.open(fileobj=_MetadataBound(gz, where), mode="r:") as tar:
            while (info := tar.next()) is not None:
                member = _checked(info, where=where, seen=seen, max_member=max_member)
                total += member.size
                if total > max_total:
                    raise ArchiveError(f"{where}: members add up to more than {max_total:,} bytes; refusing to extract anything")
                count += 1

                def chunks(info=info, member=member) -> Iterator[bytes]:
                    src = tar.extractfile(info)
                    if src is None:
                        raise ArchiveError(f"{where}: member {member.name!r} has no readable content")
                    read = 0
                    while chunk := src.read(CHUNK):
                        read += len(chunk)
                        if read > member.size:   # tarfile stops at the header's size; this guards that promise
                            raise ArchiveError(f"{where}: member {member.name!r} holds more bytes than its header says")
                        yield chunk

                yield member, chunks
            trailer = 0
            while chunk := gz.read(CHUNK):
                trailer += len(chunk)
                if trailer > TRAILER_LIMIT:
                    raise ArchiveError(f"{where}: more than {TRAILER_LIMIT:,} bytes after the end of the tar archive; "
                                       "refusing to read it")
    except ArchiveError:
        raise
    except EOFError:
        raise ArchiveError(f"{where}: the gzip stream is truncated (the archive is incomplete)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise ArchiveError(f"{where}: not a valid gzip file: {e}") from None
    except (tarfile.TarError, OSError) as e:
        raise ArchiveError(f"{where}: not a readable tar archive: {e}") from None
    if count == 0:
        raise ArchiveError(f"{where}: the archive is empty")


def list_members(path: Path, *, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES) -> list[Member]:
    """Check every header of a .tar.gz without extracting anything; raise on the first
    unsafe member. Only regular files and folders are accepted."""
    return [m for m, _ in stream_members(path, max_member=max_member, max_total=max_total)]


@contextmanager
def extracted(path: Path, *, expected: dict[str, int] | None = None, **limits) -> Iterator[tuple[Path, list[Member]]]:
    """Extract the archive into a new temporary folder that is removed on exit. Yields
    (folder, members). Files are written by this code, not tarfile's extract(), so only
    checked names and regular contents can ever be created, and never over anything.

    Without `expected`, every header is checked (a full pass) before anything is
    written. With it (file name -> size, from a caller that has already checked the
    whole archive, e.g. against a release's manifest), the files are written in the same
    pass that reads them, and any file not in `expected` or of another size stops the
    extraction before its first byte."""
    if expected is None:
        members = list_members(path, **limits)
        expected = {m.name: m.size for m in members if not m.is_dir}
    tmp = Path(tempfile.mkdtemp(prefix="edgepack-unpack-"))
    members = []
    try:
        root = tmp.resolve()
        for m, chunks in stream_members(path, **limits):
            members.append(m)
            dest = (root / m.name).resolve()
            if root not in dest.parents:  # defence in depth; _check_relative already rules this out
                raise ArchiveError(f"{path.name}: member {m.name!r} resolves outside the extraction folder")
            if m.is_dir:
                dest.mkdir(parents=True, exist_ok=True)
                continue
            if expected.get(m.name) != m.size:
                raise ArchiveError(f"{path.name}: member {m.name!r} ({m.size:,} bytes) was not in the checked listing; "
                                   "refusing to extract it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            # "xb": never follow or overwrite anything already there.
            with open(dest, "xb") as out:
                for chunk in chunks():
                    out.write(chunk)
            os.chmod(dest, 0o644)
        yield root, members
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["ArchiveError", "Member", "write_archive", "stream_members", "list_members", "extracted",
           "source_date_epoch", "sha256_file", "sha256_bytes"]
