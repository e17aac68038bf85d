"""Runs artifacts on a real board over ssh: the same runner_script.py (or, for ExecuTorch
on aarch64, the same native et_runner) as the host and qemu runners, so a RunResult from
a Raspberry Pi compares figure for figure with the emulated one.

Transport: the system `ssh` client, nothing else on the board but a POSIX shell, `tar`,
`mktemp` and (for formats without a native runner, LiteRT/ONNX) a Python 3 with numpy
and the format's runtime. One run is two or three connections:

1. (formats with a native runner only, ExecuTorch) ask the remote which machine it is, to
   pick the runner it needs;
2. upload: a fresh `mktemp -d` folder receives a tar stream on stdin (the runner and the
   format's loader file if it has one, the artifact, the inputs; for ExecuTorch on
   aarch64 the et_runner and its libraries);
3. run: a small shell script runs the runner in that folder, streams back a tar of the
   result, and removes the folder. The client keeps that session's stdin open and never
   writes to it: the script treats end of file there as "the client is gone" (timeout,
   Ctrl-C, a dropped link, a killed sshd) and kills the runner and removes the folder
   itself, because after a lost link no second connection may ever get through.

Options that bound every wait: BatchMode (never a password prompt), ConnectTimeout (an
unreachable host fails in that many seconds), ServerAliveInterval/CountMax (a link that
dies silently is noticed within interval x count seconds), and a wall-clock limit on the
run. Host keys: trust on first use into edgepack's own known_hosts file, refuse a changed
key (StrictHostKeyChecking=accept-new), so a user's ~/.ssh/known_hosts is never written.
The user's ~/.ssh/config still applies (host aliases, ProxyJump).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepack.config.schema import DeviceProfile
from edgepack.devices.base import (RUNNER_SCRIPT, RunResult, check_native_batch, input_bytes, read_outputs, script_arguments,
                                   stderr_reason, wire_files)
from edgepack.devices.host import result_from_json
from edgepack.errors import ConfigError, ToolchainError

if TYPE_CHECKING:
    from edgepack.formats import Format

RUN_TIMEOUT_S = 900
# ExecuTorch's libraries et_runner links (sysroot.py builds it with this RUNPATH).
ET_LIBRARIES = (
    "libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libexecutorch_kernels_optimized.so",
    "libexecutorch_kernels_quantized.so", "libexecutorch_threadpool.so",
)
# What `pip install` brings the module the runner script itself imports; each format
# names its runtime's (Format.board_modules).
PIP_PACKAGES = {"numpy": "numpy"}

# Runs on the board as `sh session.sh DIR COMMAND...` from inside DIR. POSIX sh only
# (dash, busybox ash). Exit status 0 means "the tar on stdout says what happened".
SESSION_SCRIPT = r"""
d=$1; shift
cd "$d" || exit 97
exec 3<&0
: > running
"$@" > stdout.txt 2> stderr.txt < /dev/null &
pid=$!
echo "$pid" > pid
# Background lists read /dev/null unless told otherwise: hand the watchdog the session's
# stdin explicitly. The client never writes to it, so end of file means the client is gone.
( cat <&3 > /dev/null
  if [ -e "$d/running" ]; then kill -9 "$pid" 2> /dev/null; cd /; rm -rf "$d"; fi
) > /dev/null 2>&1 &
exec 3<&-
wait "$pid"
echo "$?" > status
rm -f running
tail -c 65536 stderr.txt > stderr.tail 2> /dev/null
set --
for f in result.json outputs.npy outputs.npz stderr.tail status; do [ -e "$f" ] && set -- "$@" "$f"; done
tar -cf - "$@"
cd / && rm -rf "$d"
exit 0
"""

# Python's view of the machine is what `uname -m` says on a board; asking the remote's
# Python first also covers a remote whose programs start through exec_prefix.
_MACHINE_PROBE = "import os; print(os.uname().machine)"


@dataclass(frozen=True)
class _Remote:
    returncode: int
    stdout: bytes
    stderr: str


class SshRunner:
    """Runs artifacts on `target` (a DeviceProfile with [reach] ssh_host, or "host" /
    "user@host") over ssh.

    `python` is the remote command that starts a Python 3 with the runtimes (a venv's
    python, say). `exec_prefix` goes before every program started on the remote: for
    example `taskset -c 4-7` to pin a big.LITTLE board's big cores; the tests put a
    qemu-user launcher there to make a loopback sshd behave as an aarch64 board.
    """

    name = "ssh"

    def __init__(self, target: DeviceProfile | str, *, port: int | None = None, user: str | None = None,
                 identity_file: Path | str | None = None, python: str | None = None, exec_prefix: str = "",
                 connect_timeout_s: float = 10, run_timeout_s: float = RUN_TIMEOUT_S,
                 alive_interval_s: int = 5, alive_count_max: int = 3, known_hosts: Path | str | None = None):
        if isinstance(target, DeviceProfile):
            reach = target.reach
            if not reach.ssh_host:
                raise ConfigError(f"device profile {target.name!r} has no [reach] ssh_host: set it to the board's host name")
            host, port = reach.ssh_host, port if port is not None else reach.ssh_port
            user = user or reach.ssh_user or None
            python = python or reach.ssh_python
        else:
            host = target
        if "@" in host:
            host_user, host = host.rsplit("@", 1)
            user = user or host_user
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ConfigError(f"ssh host {host!r} is not a host name")
        self.host = host
        self.port = int(port or 22)
        self.user = user
        self.identity_file = Path(identity_file).expanduser() if identity_file else None
        self.python = python or "python3"
        self.exec_prefix = exec_prefix
        self.connect_timeout_s = connect_timeout_s
        self.run_timeout_s = run_timeout_s
        self.alive_interval_s = alive_interval_s
        self.alive_count_max = alive_count_max
        if known_hosts is None:
            from edgepack.devices.sysroot import cache_root

            known_hosts = cache_root() / "ssh" / "known_hosts"
        self.known_hosts = Path(known_hosts)

    @property
    def destination(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def available(self) -> bool:
        """Whether the host answers and accepts the key: one connection, bounded by
        connect_timeout_s."""
        try:
            self._ssh("true", what="checking the connection", timeout=self._setup_timeout())
        except ToolchainError:
            return False
        return True

    # ------------------------------------------------------------------ one run

    def run(self, artifact: Path, fmt: str, inputs: np.ndarray, *, warmup: int, iterations: int, threads: int,
            batch: int | None = None, op_profile: bool = False, delegate: str | None = None) -> RunResult:
        from edgepack.formats import get_format

        format_ = get_format(fmt)
        artifact = Path(artifact).resolve()
        if not artifact.is_file():
            raise ToolchainError(f"{fmt}: no artifact at {artifact}", format=fmt, stage="run")
        model = f"model{format_.extension}"
        files: dict[str, bytes | Path] = {
            "session.sh": SESSION_SCRIPT.encode(),
            model: artifact,
        }
        in_name, out_name = wire_files(inputs)
        files[in_name] = input_bytes(inputs)
        machine = self._machine(fmt) if format_.native_runner else None
        native = machine == "aarch64"
        if native:
            check_native_batch(format_, batch)
        protocol = script_arguments(
            format_, artifact=model, inputs=in_name, outputs=out_name, result="result.json",
            warmup=warmup, iterations=iterations, threads=threads, batch=batch, op_profile=op_profile and not native,
            loader_file=None if format_.loader_file is None else "loader.py", delegate=delegate)
        if native:
            # The runtime's Python package may need what a board lacks (ExecuTorch's, an
            # aarch64 torch); the native runner needs nothing but libstdc++, so boards get
            # the one the emulated runs use.
            files.update(_native_runner_files(format_.native_runner))
            command = [*shlex.split(self.exec_prefix), f"./bin/{format_.native_runner}", *protocol]
            remote_cmd = " ".join(shlex.quote(w) for w in command)
        else:
            files["runner_script.py"] = RUNNER_SCRIPT
            if format_.loader_file is not None:
                files["loader.py"] = format_.loader_file
            remote_cmd = " ".join([self.exec_prefix, self.python, "runner_script.py", *map(shlex.quote, protocol)]).strip()

        folder = self._upload(files, fmt, artifact)
        finished = False
        try:
            reply = self._session(folder, remote_cmd, fmt, artifact)
            finished = True
        finally:
            if not finished:
                self._cleanup(folder)
        return self._result(reply, format_, artifact, machine)

    # ------------------------------------------------------------------ steps

    def _machine(self, fmt: str) -> str:
        probe = f"{self.exec_prefix} {self.python} -c {shlex.quote(_MACHINE_PROBE)} 2>/dev/null || uname -m".strip()
        reply = self._ssh(probe, what="asking the board's machine", timeout=self._setup_timeout(), fmt=fmt)
        return reply.stdout.decode(errors="replace").strip().splitlines()[-1] if reply.stdout.strip() else "unknown"

    def _upload(self, files: dict[str, bytes | Path], fmt: str, artifact: Path) -> str:
        payload = _tar(files)
        # Creating the folder, unpacking into it and naming it is one connection; a
        # failed unpack removes the folder before answering.
        script = ('d=$(mktemp -d "${TMPDIR:-/tmp}/edgepack-XXXXXX") || exit 97; '
                  'cd "$d" && tar -xf - || { cd /; rm -rf "$d"; exit 98; }; echo "$d"')
        timeout = self._setup_timeout() + len(payload) / 1e6  # a 1 MB/s link at worst
        reply = self._ssh(script, what=f"uploading {artifact.name}", timeout=timeout, stdin=payload, fmt=fmt)
        folder = reply.stdout.decode(errors="replace").strip()
        if reply.returncode != 0 or not folder.startswith("/"):
            raise ToolchainError(
                f"ssh: could not prepare a folder on {self.destination} for {artifact.name} "
                f"(exit {reply.returncode}): {stderr_reason(reply.stderr)}", format=fmt, stage="upload")
        return folder

    def _session(self, folder: str, remote_cmd: str, fmt: str, artifact: Path) -> _Remote:
        argv = self._argv(f"cd {shlex.quote(folder)} && exec sh session.sh {shlex.quote(folder)} {remote_cmd}")
        # stdin is a pipe we hold open and never write: closing it is how the board learns
        # that this side gave up (see SESSION_SCRIPT).
        keep_r, keep_w = os.pipe()
        try:
            proc = subprocess.Popen(argv, stdin=keep_r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        finally:
            os.close(keep_r)
        try:
            stdout, stderr = proc.communicate(timeout=self.run_timeout_s)
        except subprocess.TimeoutExpired:
            os.close(keep_w)
            keep_w = None
            try:  # give the board's watchdog a moment to stop the runner and answer
                proc.communicate(timeout=min(5.0, self.connect_timeout_s))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            raise ToolchainError(
                f"{fmt}: {artifact.name} did not finish on {self.destination} within {self.run_timeout_s:g} s",
                format=fmt, stage="run") from None
        except BaseException:  # Ctrl-C: stop ssh too; the closed stdin stops the board's side
            if keep_w is not None:
                os.close(keep_w)
                keep_w = None
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if keep_w is not None:
                os.close(keep_w)
        reply = _Remote(proc.returncode, stdout, stderr.decode(errors="replace"))
        if proc.returncode == 255:
            raise ToolchainError(
                f"ssh: lost the connection to {self.destination} while running {artifact.name}: {_ssh_reason(reply.stderr)}",
                format=fmt, stage="run")
        return reply

    def _cleanup(self, folder: str) -> None:
        """Best effort after a failed session: stop the runner and remove the folder.
        The session script does the same by itself when the link is gone, so a failure
        here (the host is unreachable now) is not reported."""
        q = shlex.quote(folder)
        script = f'[ -f {q}/pid ] && kill -9 "$(cat {q}/pid)" 2>/dev/null; rm -rf {q}'
        try:
            self._ssh(script, what="cleaning up", timeout=self._setup_timeout(), check=False)
        except ToolchainError:
            pass

    def _result(self, reply: _Remote, format_: Format, artifact: Path, machine: str | None) -> RunResult:
        fmt = format_.name
        try:
            got = _untar(reply.stdout, {"result.json", "outputs.npy", "outputs.npz", "stderr.tail", "status"})
        except (tarfile.TarError, ValueError) as e:
            raise ToolchainError(
                f"{fmt}: unexpected reply from {self.destination} running {artifact.name} "
                f"(exit {reply.returncode}): {e}; {stderr_reason(reply.stderr)}", format=fmt, stage="run") from None
        status = int(got.get("status", b"-1").strip() or -1)
        stderr = got.get("stderr.tail", b"").decode(errors="replace")
        where = f"on {self.destination}"
        if "result.json" not in got:
            if status == 127:
                program = format_.native_runner if machine == "aarch64" else f"{self.python!r}"
                raise ToolchainError(
                    f"{fmt}: {program} is not there {where}: {stderr_reason(stderr)}"
                    + ("" if machine == "aarch64" else " (set the profile's [reach] ssh_python to a Python 3)"),
                    format=fmt, stage="run")
            raise ToolchainError(
                f"{fmt}: the {fmt} runtime crashed running {artifact.name} {where} "
                f"({_exit_text(status)}): {stderr_reason(stderr)}", format=fmt, stage="run")
        doc = json.loads(got["result.json"])
        if not doc.get("ok"):
            error = doc.get("error", "")
            missing = re.search(r"No module named '([\w.]+)'", error)
            if missing:
                module = missing.group(1).split(".")[0]
                package = {**PIP_PACKAGES, **format_.board_modules}.get(module, module)
                raise ToolchainError(
                    f"{fmt}: the Python {where} ({self.python}) lacks the module {module!r}: "
                    f"run `{self.python} -m pip install {package}` there", format=fmt, stage="run")
            raise ToolchainError(
                f"{fmt}: the {doc.get('machine', '')} {fmt} runtime {where} rejected {artifact.name}: {error}".replace("  ", " "),
                format=fmt, stage="run")
        out_name = next((n for n in ("outputs.npz", "outputs.npy") if n in got), None)
        if out_name is None:
            raise ToolchainError(f"{fmt}: {self.destination} returned no outputs for {artifact.name}", format=fmt, stage="run")
        outputs = read_outputs(got[out_name])
        return result_from_json(self.name, doc, outputs)

    # ------------------------------------------------------------------ ssh

    def _setup_timeout(self) -> float:
        # Connecting, authenticating and a short command: ConnectTimeout bounds the first
        # part; the rest gets one keep-alive window.
        return self.connect_timeout_s + self.alive_interval_s * self.alive_count_max + 5

    def _argv(self, remote_command: str) -> list[str]:
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            "ssh", "-T", "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}",
            "-o", "ConnectionAttempts=1",
            "-o", f"ServerAliveInterval={self.alive_interval_s}",
            "-o", f"ServerAliveCountMax={self.alive_count_max}",
            "-o", "LogLevel=ERROR",
        ]
        if self.identity_file:
            argv += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, "--", self.host, remote_command]

    def _ssh(self, remote_command: str, *, what: str, timeout: float, stdin: bytes | None = None,
             fmt: str | None = None, check: bool = True) -> _Remote:
        try:
            proc = subprocess.run(self._argv(remote_command), input=stdin if stdin is not None else b"",
                                  capture_output=True, timeout=timeout, start_new_session=True)
        except FileNotFoundError:
            raise ToolchainError("ssh: the ssh client is not installed (apt package openssh-client)", format=fmt, stage="connect") from None
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"ssh: {what} on {self.destination} did not finish within {timeout:.0f} s",
                                 format=fmt, stage="connect") from None
        reply = _Remote(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
        if check and proc.returncode == 255:
            raise self._connect_error(reply.stderr, fmt)
        return reply

    def _connect_error(self, stderr: str, fmt: str | None) -> ToolchainError:
        reason = _ssh_reason(stderr)
        if "Permission denied" in reason:
            text = f"ssh: {self.destination} refused the login: {reason}" + (
                f" (key {self.identity_file})" if self.identity_file else " (BatchMode: keys only, no passwords)")
        elif "Host key verification failed" in reason or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            text = (f"ssh: the host key of {self.destination} differs from the one first seen; if the board was "
                    f"reinstalled, remove its line from {self.known_hosts}")
        else:
            text = f"ssh: cannot reach {self.destination} within {self.connect_timeout_s:g} s: {reason}"
        return ToolchainError(text, format=fmt, stage="connect")


# ---------------------------------------------------------------------- helpers


# What each native runner of the emulated environment needs beside it on a board.
NATIVE_LIBRARIES = {"et_runner": {"executorch/lib": ET_LIBRARIES}}


def _native_runner_files(program: str) -> dict[str, Path]:
    from edgepack.devices.sysroot import require_env

    env = require_env()
    files: dict[str, Path] = {f"bin/{program}": env.root / "bin" / program}
    for folder, names in NATIVE_LIBRARIES.get(program, {}).items():
        files.update({f"{folder}/{name}": env.root / folder / name for name in names})
    return files


def _tar(files: dict[str, bytes | Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") or name.endswith(".sh") else 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _untar(data: bytes, wanted: set[str]) -> dict[str, bytes]:
    """The regular files named in `wanted` from a tar stream; anything else is ignored
    and nothing is written to disk."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                found[member.name] = tar.extractfile(member).read()
    if "status" not in found:
        raise ValueError("no run status in the reply")
    return found


def _ssh_reason(stderr: str) -> str:
    """ssh's own last word, without its "ssh: connect to host X port N:" preamble."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "ssh exited without a message"
    last = lines[-1]
    match = re.match(r"ssh: (connect to host \S+ port \d+|Could not resolve hostname \S+): (.*)", last)
    if match:
        return match.group(2)
    # "pi@host: Permission denied (publickey)." names the destination we already name.
    return re.sub(r"^[^\s:]+@[^\s:]+: ", "", last.removeprefix("ssh: ")).rstrip(".")


def _exit_text(status: int) -> str:
    if status > 128:
        try:
            return f"killed by {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return f"exit {status}"

