"""Reproducible writing and distrustful reading of release archives."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from edgepack.errors import ConfigError
from edgepack.release.archive import DEFAULT_EPOCH, ArchiveError, extracted, list_members, write_archive


def _files(folder: Path) -> dict[str, Path]:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "b.bin").write_bytes(b"\x00\x01" * 5000)
    (folder / "a.txt").write_text("hello\n")
    (folder / "sub" / "c.npy").write_bytes(b"x" * 123)
    return {"b.bin": folder / "b.bin", "a.txt": folder / "a.txt", "sub/c.npy": folder / "sub" / "c.npy"}


def test_archive_is_byte_identical_when_written_twice_from_files_with_different_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    os.utime(two["a.txt"], (1, 1))          # other mtimes and modes on disk must not leak in
    os.chmod(two["b.bin"], 0o600)
    write_archive(tmp_path / "1.tar.gz", "rel", one)
    write_archive(tmp_path / "2.tar.gz", "rel", dict(reversed(list(two.items()))))
    assert (tmp_path / "1.tar.gz").read_bytes() == (tmp_path / "2.tar.gz").read_bytes()


def test_archive_entries_are_sorted_owned_by_root_with_fixed_modes_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    write_archive(tmp_path / "r.tar.gz", "rel", _files(tmp_path / "src"))
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["rel", "rel/a.txt", "rel/b.bin", "rel/sub", "rel/sub/c.npy"]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mtime for m in members} == {1700000000}
    assert {m.name: oct(m.mode) for m in members if m.isdir()} == {"rel": "0o755", "rel/sub": "0o755"}
    assert {oct(m.mode) for m in members if m.isfile()} == {"0o644"}


def test_archive_gzip_header_has_no_timestamp_or_file_name(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    write_archive(tmp_path / "r.tar.gz", "rel", _files(tmp_path / "src"))
    head = (tmp_path / "r.tar.gz").read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] & 0x08 == 0, "FNAME flag set: the header carries a file name"
    assert head[4:8] == b"\x00\x00\x00\x00", "MTIME is set"
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {DEFAULT_EPOCH}


def test_source_date_epoch_changes_the_bytes_and_bad_values_are_rejected(tmp_path, monkeypatch):
    files = _files(tmp_path / "src")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    write_archive(tmp_path / "1.tar.gz", "rel", files)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000001")
    write_archive(tmp_path / "2.tar.gz", "rel", files)
    assert (tmp_path / "1.tar.gz").read_bytes() != (tmp_path / "2.tar.gz").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH='yesterday'"):
        write_archive(tmp_path / "3.tar.gz", "rel", files)


# --------------------------------------------------------------------------- hostile archives


def _evil(path: Path, *members: tarfile.TarInfo, data: bytes = b"owned\n") -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _info(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


HOSTILE = {
    "parent": ([_info("rel/ok.txt"), _info("rel/../../escaped.txt")], "climbs out with '..'"),
    "absolute": ([_info("/tmp/edgepack-escaped-absolute.txt")], "absolute path"),
    "symlink": ([_info("rel/link", tarfile.SYMTYPE, "/etc/passwd"), _info("rel/link/x")], "symbolic link"),
    "hardlink": ([_info("rel/hard", tarfile.LNKTYPE, "/etc/passwd")], "hard link"),
    "device": ([_info("rel/dev", tarfile.CHRTYPE)], "device or FIFO"),
    "fifo": ([_info("rel/pipe", tarfile.FIFOTYPE)], "device or FIFO"),
    "duplicate": ([_info("rel/a"), _info("rel/a")], "appears twice"),
    "backslash": ([_info("rel\\..\\x")], "backslash"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_reading_rejects_hostile_member_before_extracting_anything(tmp_path, case, monkeypatch):
    members, message = HOSTILE[case]
    (tmp_path / "work").mkdir()
    archive = _evil(tmp_path / "work" / "evil.tar.gz", *members)
    monkeypatch.chdir(tmp_path / "work")
    before = sorted(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("edgepack-unpack-*"))
    with pytest.raises(ArchiveError, match=message):
        with extracted(archive):
            pytest.fail("extraction went ahead")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["evil.tar.gz"]
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/edgepack-escaped-absolute.txt").exists()
    after = sorted(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("edgepack-unpack-*"))
    assert after == before, "a temporary extraction folder was left behind"


def test_reading_rejects_oversized_member_from_its_header(tmp_path):
    archive = _evil(tmp_path / "big.tar.gz", _info("rel/big.bin"), data=b"z" * 5000)
    with pytest.raises(ArchiveError, match="over the 4,096-byte limit"):
        list_members(archive, max_member=4096)


def test_reading_rejects_truncated_and_non_gzip_archives(tmp_path):
    good = tmp_path / "good.tar.gz"
    write_archive(good, "rel", {"r.bin": _write(tmp_path / "r.bin", os.urandom(50_000))})
    data = good.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        list_members(tmp_path / "cut.tar.gz")
    (tmp_path / "flip.tar.gz").write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:])
    with pytest.raises(ArchiveError, match="not a valid gzip file"):
        list_members(tmp_path / "flip.tar.gz")
    (tmp_path / "plain.tar.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(ArchiveError, match="not a valid gzip file"):
        list_members(tmp_path / "plain.tar.gz")
    (tmp_path / "notar.tar.gz").write_bytes(gzip.compress(b"gzip, but not tar" * 100))
    with pytest.raises(ArchiveError, match="not a readable tar archive|empty"):
        list_members(tmp_path / "notar.tar.gz")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_extracted_round_trips_contents_and_removes_its_folder(tmp_path):
    files = _files(tmp_path / "src")
    write_archive(tmp_path / "r.tar.gz", "rel", files)
    with extracted(tmp_path / "r.tar.gz") as (folder, members):
        kept = folder
        assert (folder / "rel" / "sub" / "c.npy").read_bytes() == b"x" * 123
        assert (folder / "rel" / "b.bin").read_bytes() == files["b.bin"].read_bytes()
        assert len([m for m in members if not m.is_dir]) == 3
    assert not kept.exists()
