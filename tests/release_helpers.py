"""Shared by the release tests: one real build of the digits sample per test process
(about 20 s), and running the CLI the way a user does, in a child process."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "digits"


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edgepack-release-test-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def built_output(name: str = "first") -> Path:
    """The output folder of a real `edgepack build -t android` of the digits sample;
    dist/android/ is inside. Tests copy it before changing anything."""
    out = _scratch() / name
    proc = cli("build", "-p", SAMPLE, "-t", "android", "-o", out, "--json", "--fresh", "--no-latency-gate")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def copy_output(tmp_path: Path) -> Path:
    dst = tmp_path / "dist"
    shutil.copytree(built_output(), dst)
    return dst


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The user-facing error: exactly one line on stderr, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
