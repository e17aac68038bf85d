"""Choosing a runner by name: host, qemu (emulated aarch64), ssh (a board) or adb (a
phone), with command-line overrides of how the device profile says to reach it.

(Not `select.py`: runner_script.py runs from this folder, where that name would shadow
the standard library's module for every runtime it imports.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.config.schema import DeviceProfile
from edgepack.devices.base import Runner
from edgepack.errors import ConfigError

RUNNERS = ("host", "qemu", "ssh", "adb")


@dataclass(frozen=True)
class ReachOverrides:
    """Command-line overrides of a device profile's [reach] settings (config.schema.Reach)."""

    ssh_host: str | None = None
    ssh_port: int | None = None
    identity_file: Path | None = None
    ssh_python: str | None = None
    exec_prefix: str = ""
    connect_timeout_s: float = 10
    adb_serial: str | None = None


def make_runner(name: str, device: DeviceProfile, reach: ReachOverrides = ReachOverrides(), *,
                count_instructions: bool = True) -> Runner:
    if name == "host":
        from edgepack.devices.host import HostRunner

        return HostRunner()
    if name == "qemu":
        from edgepack.devices.qemu import QemuRunner

        return QemuRunner(device, count_instructions=count_instructions)
    if name == "ssh":
        from edgepack.devices.ssh import SshRunner

        return SshRunner(reach.ssh_host or device, port=reach.ssh_port, identity_file=reach.identity_file,
                         python=reach.ssh_python, exec_prefix=reach.exec_prefix, connect_timeout_s=reach.connect_timeout_s)
    if name == "adb":
        from edgepack.devices.adb import AdbRunner

        serial = reach.adb_serial or device.reach.adb_serial
        if not serial:
            raise ConfigError(f"device profile {device.name!r} has no [reach] adb_serial; set it or pass --adb-serial (see `adb devices`)")
        return AdbRunner(serial)
    raise ConfigError(f"--runner {name!r}: valid runners: {', '.join(RUNNERS)}")
