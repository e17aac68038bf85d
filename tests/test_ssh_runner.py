"""The ssh runner against a real OpenSSH server on 127.0.0.1 whose programs run on an
emulated Cortex-A72 (qemu-user with the prepared arm64 environment): to the runner it is
an aarch64 board reached over ssh, like a Raspberry Pi 4. No mocks: the real `ssh`
client, the real `sshd`, the real aarch64 runtimes and the digits sample's int8 artifacts.

The server: a temporary sshd_config (loopback, a free non-default port, generated host
and user keys, no PAM, no passwords), started in the foreground so the test owns its
process. Remote programs start through a launcher script that execs qemu-aarch64 with
the same prefix and environment as QemuRunner (qemu.qemu_prefix, qemu.guest_environment),
so a loopback run and an emulated run are the same computation reached two ways.

Parity tolerance: outputs must be bit-identical to the host runner's (see
test_qemu_runner.py for why int8 outputs cannot differ between x86-64 and aarch64).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.config.loader import profiles_catalog
from edgepack.devices.host import HostRunner
from edgepack.devices.qemu import QemuRunner, guest_environment, qemu_prefix
from edgepack.devices.ssh import SshRunner
from edgepack.errors import ConfigError, ToolchainError

pytestmark = pytest.mark.slow

from edgepack.formats import FORMATS  # noqa: E402
EXTENSIONS = FORMATS.extensions()
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
CPU = "cortex-a72"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Board:
    """A loopback sshd that stands in for an aarch64 board."""

    def __init__(self, root: Path, arm64_env):
        self.root = root
        self.port = _free_port()
        self.tmp = root / "remote-tmp"  # the board's TMPDIR: where the runner's folders go
        self.tmp.mkdir()
        for name in ("host_key", "id"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
        (root / "authorized_keys").write_text((root / "id.pub").read_text())
        (root / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {root / 'host_key'}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv TMPDIR={self.tmp}
""")
        cpu_root = arm64_env.cpu_root(CPU)
        self.home = root / "home"
        self.home.mkdir()
        env = guest_environment(arm64_env.site, home=self.home)
        launcher = root / "aarch64"
        launcher.write_text("#!/bin/sh\nexec env -i " + " ".join(f"{k}={v}" for k, v in env.items())
                            + " " + " ".join(qemu_prefix(cpu_root, CPU)) + ' "$@"\n')
        launcher.chmod(0o755)
        self.launcher = str(launcher)
        self.python = str(cpu_root / "usr" / "bin" / "python3.11")
        # sshd refuses to start without its privilege separation folder.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()}")

    def runner(self, **options) -> SshRunner:
        options = {"port": self.port, "user": "root", "identity_file": self.root / "id",
                   "known_hosts": self.root / "known_hosts", "python": self.python,
                   "exec_prefix": self.launcher, **options}
        return SshRunner("127.0.0.1", **options)

    def sessions(self) -> list[int]:
        """The per-connection sshd processes the listener forked."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def sshd_descendants(self) -> list[int]:
        """Every sshd process serving a connection (not the shells and runners below them)."""
        found, frontier = [], [self.proc.pid]
        while frontier:
            out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", ",".join(map(str, frontier))],
                                 capture_output=True, text=True).stdout.split("\n")
            rows = [line.split() for line in out if line.strip()]
            frontier = [int(pid) for pid, comm in rows if comm == "sshd"]
            found += frontier
        return found

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.tmp.iterdir() if p.name.startswith("edgepack-"))

    def kill(self) -> None:
        for pid in self.sessions():
            _kill(pid)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def arm64_env():
    from edgepack.devices import sysroot

    return sysroot.setup(progress=False)


@pytest.fixture(scope="module")
def board(tmp_path_factory, arm64_env):
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server and openssh-client are not installed (apt packages openssh-server openssh-client)")
    stand_in = Board(tmp_path_factory.mktemp("board"), arm64_env)
    yield stand_in
    stand_in.kill()


@pytest.fixture(scope="module")
def artifacts(digits_artifacts) -> dict[str, Path]:
    return digits_artifacts


@pytest.fixture(scope="module")
def inputs(digits_evaluation_inputs) -> np.ndarray:
    return np.ascontiguousarray(digits_evaluation_inputs[:32])


@pytest.mark.parametrize("fmt", tuple(EXTENSIONS))
def test_ssh_runner_outputs_equal_host_when_int8_on_an_aarch64_board(board, artifacts, inputs, fmt):
    remote = board.runner().run(artifacts[fmt], fmt, inputs, warmup=1, iterations=3, threads=1)
    host = HostRunner().run(artifacts[fmt], fmt, inputs, warmup=1, iterations=3, threads=1)
    assert remote.runner == "ssh" and remote.machine == "aarch64" and host.machine != "aarch64"
    assert remote.outputs.shape == host.outputs.shape == (len(inputs), 10)
    np.testing.assert_array_equal(remote.outputs, host.outputs)
    assert remote.latency_dict()["timing"] == "wall time on the ssh runner"
    assert board.leftovers() == []


def test_ssh_runner_matches_qemu_runner(board, artifacts, inputs):
    remote = board.runner().run(artifacts["onnx"], "onnx", inputs, warmup=1, iterations=3, threads=1)
    emulated = QemuRunner(profiles_catalog().load("raspberry-pi-4")).run(artifacts["onnx"], "onnx", inputs, warmup=1, iterations=3, threads=1)
    np.testing.assert_array_equal(remote.outputs, emulated.outputs)
    assert remote.runtime_version == emulated.runtime_version


def test_ssh_runner_fails_fast_when_the_port_is_closed(board, artifacts, inputs):
    closed = _free_port()
    started = time.monotonic()
    with pytest.raises(ToolchainError) as err:
        board.runner(port=closed, connect_timeout_s=3).run(artifacts["onnx"], "onnx", inputs, warmup=0, iterations=1, threads=1)
    elapsed = time.monotonic() - started
    assert elapsed < 3
    assert str(err.value) == f"ssh: cannot reach root@127.0.0.1:{closed} within 3 s: Connection refused"
    assert err.value.exit_code == 3


def test_ssh_runner_gives_up_at_connect_timeout_when_the_host_never_answers(board, artifacts, inputs):
    # A listening socket that never accepts stands for a host whose packets vanish: the
    # handshake cannot complete, so only ConnectTimeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ToolchainError, match=rf"cannot reach root@127.0.0.1:{port} within 2 s"):
            board.runner(port=port, connect_timeout_s=2).run(artifacts["onnx"], "onnx", inputs, warmup=0, iterations=1, threads=1)
        assert 1.5 < time.monotonic() - started < 10


def test_ssh_runner_refuses_an_unknown_key(board, artifacts, inputs, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(ToolchainError, match=r"refused the login: Permission denied \(publickey\)"):
        board.runner(identity_file=tmp_path / "stranger").run(artifacts["onnx"], "onnx", inputs, warmup=0, iterations=1, threads=1)


def test_ssh_runner_reports_a_lost_link_and_the_board_cleans_up_when_sshd_dies(tmp_path, arm64_env, artifacts, inputs):
    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (apt package openssh-server)")
    doomed = Board(tmp_path, arm64_env)
    worker, outcome = _start_endless_run(doomed, artifacts, inputs)
    try:
        _wait_for(lambda: any((d / "running").exists() for d in doomed.tmp.iterdir()), 60, "the runner to start on the board")
    finally:
        killed = time.monotonic()
        doomed.kill()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the runner hung after sshd died"
    assert time.monotonic() - killed < 30
    assert "lost the connection to root@127.0.0.1" in str(outcome["error"])
    # With sshd gone no cleanup command can get through: the board's own watchdog saw its
    # stdin close, killed the runner and removed the folder.
    _wait_for(lambda: doomed.leftovers() == [], 15, "the board to remove the run folder")


def test_ssh_runner_notices_a_silent_link_and_cleans_up_over_a_new_connection(tmp_path, arm64_env, artifacts, inputs):
    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (apt package openssh-server)")
    stalled = Board(tmp_path, arm64_env)
    worker, outcome = _start_endless_run(stalled, artifacts, inputs)
    try:
        _wait_for(lambda: any((d / "running").exists() for d in stalled.tmp.iterdir()), 60, "the runner to start on the board")
    except BaseException:
        stalled.kill()
        raise
    # Stopped connection processes keep the TCP connection open but never answer: a link
    # that died without a reset, which only the keep-alive probes can notice.
    frozen = stalled.sshd_descendants()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the runner hung on a silent link"
        assert time.monotonic() - stopped < 15
        assert "lost the connection" in str(outcome["error"])
        # The listener still accepts, so the runner's cleanup connection removed the folder.
        assert stalled.leftovers() == []
    finally:
        for pid in frozen:
            _kill(pid)
        stalled.kill()


def test_ssh_runner_stops_the_remote_run_at_its_timeout(board, artifacts, inputs):
    started = time.monotonic()
    with pytest.raises(ToolchainError, match=r"did not finish on root@127.0.0.1:\d+ within 4 s"):
        board.runner(run_timeout_s=4).run(artifacts["onnx"], "onnx", inputs, warmup=0, iterations=10_000_000, threads=1)
    assert time.monotonic() - started < 30
    _wait_for(lambda: board.leftovers() == [], 15, "the board to remove the run folder")


def test_ssh_runner_rejects_corrupt_artifact_on_the_board(board, artifacts, inputs, tmp_path):
    data = artifacts["tflite"].read_bytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ToolchainError, match=r"the aarch64 tflite runtime on root@127.0.0.1:\d+ rejected broken.tflite"):
        board.runner().run(broken, "tflite", inputs[:2], warmup=0, iterations=1, threads=1)
    assert board.leftovers() == []


def test_ssh_runner_names_the_pip_package_when_the_board_lacks_the_runtime(board, artifacts, inputs, tmp_path, arm64_env):
    # A site folder with numpy but without onnxruntime: the board's Python as a user who
    # installed only numpy would have it.
    site = tmp_path / "site"
    site.mkdir()
    for name in os.listdir(arm64_env.site):
        if name.startswith("numpy"):
            (site / name).symlink_to(arm64_env.site / name)
    env = guest_environment(site, home=board.home)
    launcher = tmp_path / "aarch64-numpy-only"
    launcher.write_text("#!/bin/sh\nexec env -i " + " ".join(f"{k}={v}" for k, v in env.items())
                        + " " + " ".join(qemu_prefix(arm64_env.cpu_root(CPU), CPU)) + ' "$@"\n')
    launcher.chmod(0o755)
    with pytest.raises(ToolchainError, match=r"lacks the module 'onnxruntime': run `.*python3.11 -m pip install onnxruntime` there"):
        board.runner(exec_prefix=str(launcher)).run(artifacts["onnx"], "onnx", inputs[:2], warmup=0, iterations=1, threads=1)
    assert board.leftovers() == []


def test_ssh_runner_reports_a_runtime_crash_on_the_board(board, artifacts, inputs, tmp_path):
    # A launcher whose program dies of SIGSEGV, as a runtime's faulting native kernel
    # would: there is no result file, only a signal and the last words on stderr.
    crashing = tmp_path / "segfaulting"
    crashing.write_text('#!/bin/sh\necho "fault in a native kernel" >&2\nkill -SEGV $$\n')
    crashing.chmod(0o755)
    with pytest.raises(ToolchainError, match=r"the onnx runtime crashed running digits.onnx on root@127.0.0.1:\d+ "
                                             r"\(killed by SIGSEGV\): fault in a native kernel"):
        board.runner(exec_prefix=str(crashing)).run(artifacts["onnx"], "onnx", inputs[:2], warmup=0, iterations=1, threads=1)
    assert board.leftovers() == []


def test_ssh_runner_says_when_the_board_has_no_such_python(board, artifacts, inputs):
    with pytest.raises(ToolchainError, match=r"'/nonexistent/python3' is not there on root@127.0.0.1"):
        board.runner(exec_prefix="", python="/nonexistent/python3").run(artifacts["onnx"], "onnx", inputs[:2], warmup=0, iterations=1, threads=1)
    assert board.leftovers() == []


def test_ssh_runner_needs_an_ssh_host_in_the_profile():
    with pytest.raises(ConfigError, match="raspberry-pi-4.*no \\[reach\\] ssh_host"):
        SshRunner(profiles_catalog().load("raspberry-pi-4"))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended between the listing and now
        pass


def _start_endless_run(board, artifacts, inputs):
    """Start a run that would go on for hours on `board`, in a thread, with keep-alive
    probes every second; the ToolchainError it ends with lands in outcome["error"]."""
    import threading

    runner = board.runner(alive_interval_s=1, alive_count_max=2)
    outcome: dict = {}

    def run():
        try:
            runner.run(artifacts["onnx"], "onnx", inputs, warmup=0, iterations=10_000_000, threads=1)
        except ToolchainError as e:
            outcome["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    return worker, outcome


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s for {what}")
