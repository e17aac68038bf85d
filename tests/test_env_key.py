"""The emulated aarch64 environment's key: the Debian packages by resolved version."""

from __future__ import annotations

from edgepack.devices import sysroot


def test_env_key_changes_with_a_resolved_debian_package_version(monkeypatch):
    monkeypatch.setattr(sysroot, "qemu_version", lambda: "8.2.2")
    versions = {"libc6:arm64": "2.36-9+deb12u13", "python3.11:arm64": "3.11.2-6+deb12u6"}
    monkeypatch.setattr(sysroot, "resolved_debian_versions", lambda: tuple(sorted(versions.items())))
    before = sysroot.env_key()
    assert sysroot.env_key() == before
    versions["libc6:arm64"] = "2.36-9+deb12u14"   # a security update of a dependency
    assert sysroot.env_key() != before


def test_resolved_debian_versions_reads_apt_candidates(monkeypatch):
    monkeypatch.setattr(sysroot, "resolve_debian_packages", lambda: ["libc6:arm64", "python3.11:arm64"])
    policy = ("libc6:arm64:\n  Installed: (none)\n  Candidate: 2.36-9+deb12u14\n  Version table:\n"
              "python3.11:arm64:\n  Installed: (none)\n  Candidate: 3.11.2-6+deb12u6\n")
    monkeypatch.setattr(sysroot, "_run", lambda cmd, what, **kw: policy)
    sysroot.resolved_debian_versions.cache_clear()
    try:
        assert sysroot.resolved_debian_versions() == (("libc6:arm64", "2.36-9+deb12u14"),
                                                      ("python3.11:arm64", "3.11.2-6+deb12u6"))
    finally:
        sysroot.resolved_debian_versions.cache_clear()
