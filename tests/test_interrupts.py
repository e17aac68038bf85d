"""A real SIGINT or SIGTERM sent to a real `edgepack build` while it works: exit 130 or
143 with one line saying so, the previous dist folder byte for byte as it was, and no
temporary folder, staging folder or child process left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import load_sample_module

SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]

# A forward that, while a converter traces it, announces itself and then catches every
# exception for a while: what a toolchain callback that swallows KeyboardInterrupt does.
SWALLOWING_MODEL = '''

class Swallowing(Tiny):
    def forward(self, x):
        import os, time
        if torch.compiler.is_exporting() and not os.path.exists(os.environ["TRACING_MARKER"]):
            open(os.environ["TRACING_MARKER"], "w").close()
            try:
                time.sleep(60)
            except BaseException:
                pass
        return super().forward(x)


def swallowing():
    return Swallowing()
'''


def _previous_dist(project) -> dict[str, bytes]:
    """A dist folder as an earlier build left it (its content only has to survive)."""
    folder = project.root / "dist" / "onnx-only"
    folder.mkdir(parents=True)
    (folder / "tiny.onnx").write_bytes(b"previous artifact")
    (folder / "manifest.json").write_text('{"previous": true}\n')
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _start(project, tmpdir: Path, *args: str, **env) -> subprocess.Popen:
    tmpdir.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "edgepack", "build", "-p", str(project.root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmpdir), **env})


def _wait_for(proc: subprocess.Popen, found, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = found()
        if hit:
            return hit
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the build ended (exit {proc.returncode}) before {what}\n{out}\n{err}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {what} within {timeout:g} s")


def _processes_mentioning(folder: Path) -> list[int]:
    """Processes whose command line names a path in `folder` (a runner's child works on
    files in its temporary folder under the build's TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _leftovers(tmpdir: Path, project) -> list[str]:
    # torch keeps its compile cache in TMPDIR by design; everything else is the build's.
    ours = [p.name for p in tmpdir.iterdir() if p.name.startswith(("edgepack-", "tmp"))]
    staged = [p.name for p in (project.root / "dist").iterdir() if p.name.startswith(".")]
    return ours + staged


def _assert_interrupted(proc, code: int, name: str, out: str, err: str) -> None:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{out}\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    interrupted = [ln for ln in lines if "interrupted" in ln]
    assert len(interrupted) == 1 and lines[-1] == interrupted[0], err
    assert interrupted[0].startswith(f"error: interrupted by {name}"), err


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_build_signal_while_exporting_exits_with_signal_code_and_keeps_previous_dist(tiny_project, tmp_path, sig, code, name):
    before = _previous_dist(tiny_project)
    tmpdir = tmp_path / "tmp"
    proc = _start(tiny_project, tmpdir)
    # The build's workspace exists from the first export to the last write.
    _wait_for(proc, lambda: list(tmpdir.glob("edgepack-build-*")), "build workspace")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    _assert_interrupted(proc, code, name, out, err)
    assert _snapshot(tiny_project.root / "dist" / "onnx-only") == before
    assert _leftovers(tmpdir, tiny_project) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_build_signal_while_host_runner_runs_stops_the_runner_process(tiny_project, tmp_path, sig, code, name):
    before = _previous_dist(tiny_project)
    tmpdir = tmp_path / "tmp"
    proc = _start(tiny_project, tmpdir)
    # The runner's folder holds its inputs while its child process runs the artifact.
    _wait_for(proc, lambda: list(tmpdir.glob("edgepack-run-*/inputs.npy")) and _processes_mentioning(tmpdir), "runner process")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    time.sleep(0.5)  # a killed child is gone by now
    _assert_interrupted(proc, code, name, out, err)
    assert _processes_mentioning(tmpdir) == []
    assert _snapshot(tiny_project.root / "dist" / "onnx-only") == before
    assert _leftovers(tmpdir, tiny_project) == []


# A model slow enough under emulation (two convolutions on 96x96) that the emulated run
# outlasts the build's own exit: a qemu left behind would still be running then.
EMULATION_MODEL = """
import torch
from torch import nn


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Wide()
"""

EMULATION_DATA = """
import numpy as np


def split():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 1, 96, 96)).astype(np.float32), np.arange(64) % 3
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-user (apt install qemu-user)")
def test_build_signal_while_qemu_runs_stops_qemu(tiny_project, tmp_path):
    import torch
    from safetensors.torch import save_file

    root = tiny_project.root
    (root / "model.py").write_text(EMULATION_MODEL)
    (root / "data.py").write_text(EMULATION_DATA)
    torch.manual_seed(0)
    save_file(load_sample_module(root, "model").build().state_dict(), str(root / "weights.safetensors"))
    text = (root / "edgepack.toml").read_text().replace("[1, 1, 4, 4]", "[1, 1, 96, 96]")
    tiny_project.write_toml(text.replace("data.py:calibration", "data.py:split").replace("data.py:evaluation", "data.py:split")
                            .replace('training = "data.py:training"', ""))
    before = _previous_dist(tiny_project)
    tmpdir = tmp_path / "tmp"
    proc = _start(tiny_project, tmpdir, "--runner", "qemu")
    _wait_for(proc, lambda: _processes_mentioning(tmpdir / "edgepack-qemu-"), "qemu process", timeout=600)
    time.sleep(3)  # past the guest's start-up: it has read its inputs and is running the model
    assert _processes_mentioning(tmpdir), "the emulated run ended before the signal: the test model is too fast"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    time.sleep(0.5)
    _assert_interrupted(proc, 143, "SIGTERM", out, err)
    assert _processes_mentioning(tmpdir) == []
    assert _snapshot(root / "dist" / "onnx-only") == before
    assert _leftovers(tmpdir, tiny_project) == []


@pytest.mark.slow
def test_build_signal_swallowed_by_traced_code_still_stops_before_writing(tiny_project, tmp_path):
    before = _previous_dist(tiny_project)
    (tiny_project.root / "model.py").write_text((tiny_project.root / "model.py").read_text() + SWALLOWING_MODEL)
    tiny_project.write_toml((tiny_project.root / "edgepack.toml").read_text().replace("model.py:build", "model.py:swallowing"))
    marker = tmp_path / "tracing"
    tmpdir = tmp_path / "tmp"
    proc = _start(tiny_project, tmpdir, TRACING_MARKER=str(marker))
    _wait_for(proc, marker.exists, "tracing of the model")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    _assert_interrupted(proc, 130, "SIGINT", out, err)
    assert time.monotonic() - started < 55, "the build waited for the swallowing code instead of stopping"
    assert _snapshot(tiny_project.root / "dist" / "onnx-only") == before
    assert _leftovers(tmpdir, tiny_project) == []


@pytest.mark.slow
def test_build_completed_without_signal_writes_dist_and_leaves_no_temporary_folder(tiny_project, tmp_path):
    """The same checks on an uninterrupted build: they can fail, and it exits 0."""
    before = _previous_dist(tiny_project)
    tmpdir = tmp_path / "tmp"
    proc = _start(tiny_project, tmpdir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert _snapshot(tiny_project.root / "dist" / "onnx-only") != before
    assert _leftovers(tmpdir, tiny_project) == []


def test_staged_folder_interrupt_swallowed_inside_keeps_final_and_removes_staging(tmp_path):
    from edgepack.interrupts import Interrupted, installed_handlers
    from edgepack.release.dist import staged_folder

    final = tmp_path / "dist" / "target"
    final.mkdir(parents=True)
    (final / "model.onnx").write_text("previous")
    with installed_handlers(), pytest.raises(Interrupted):
        with staged_folder(final) as staging:
            (staging / "model.onnx").write_text("new")
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(2)
            except Interrupted:
                pass  # what a callback that catches everything does
    assert (final / "model.onnx").read_text() == "previous"
    assert [p.name for p in final.parent.iterdir()] == ["target"]


def test_deferred_holds_a_signal_until_the_block_is_done():
    from edgepack.interrupts import Interrupted, deferred, installed_handlers

    finished = False
    with installed_handlers(), pytest.raises(Interrupted) as caught:
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            finished = True
    assert finished and caught.value.exit_code == 130
