"""`edgepack matrix`: the step graph (one prepare per project and recipe, one export per
distinct artifact, one build per project and recipe), and the same matrix run serially,
on a local process pool and on a local Ray instance giving byte-identical artifacts and
the same figures; a failed step leaves the rest going and is listed; a Ray worker killed
mid-step is retried and leaves no corrupt cache or dist; Ctrl-C keeps finished dists."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, cli

# Figures a run measures with a clock: everything else in a manifest must be equal.
CLOCKED = ("latency_ms", "timings_s", "seconds")


def _matrix(folder: Path, body: str) -> Path:
    path = folder / "matrix.toml"
    path.write_text('[matrix]\noutput_dir = "out"\nlatency_gate = false\n' + body)
    return path


def _two_targets(tiny) -> None:
    tiny.add_target("phone-a")
    tiny.add_target("phone-b", drop=6.0)   # the same artifact under another budget: one export for both


def test_the_plan_has_one_step_per_piece_of_work(tiny_project, tmp_path):
    _two_targets(tiny_project)
    matrix = _matrix(tmp_path, f'''
[[entries]]
project = "{tiny_project.root}"
targets = ["phone-a"]
[[entries]]
project = "{tiny_project.root}"
targets = ["phone-a", "phone-b"]
''')
    run = cli("matrix", matrix, "--dry-run", "--json")
    assert run.code == 0, run.stderr
    plan = json.loads(run.stdout)
    kinds = [s["kind"] for s in plan["steps"]]
    # Two entries naming the same project and recipe: one prepare, one export (both
    # targets list the same onnx int8), one build of both targets.
    assert kinds == ["prepare", "export", "build"], plan["steps"]
    assert plan["builds"] == [{"project": "tiny", "recipe": "project", "targets": ["phone-a", "phone-b"],
                               "output_dir": str(tmp_path / "out" / "tiny" / "project")}]
    build = plan["steps"][2]
    assert set(build["deps"]) == {plan["steps"][0]["id"], plan["steps"][1]["id"]}


def test_bad_matrix_input_is_one_line_naming_the_problem(tmp_path, tiny_project):
    missing = _matrix(tmp_path, '[[entries]]\nproject = "nowhere"\n')
    assert_one_line_error(cli("matrix", missing), 2, "nowhere", "edgepack.toml")
    unknown = _matrix(tmp_path, f'[[entries]]\nproject = "{tiny_project.root}"\ntargets = ["no-such-target"]\n')
    assert_one_line_error(cli("matrix", unknown), 2, "no-such-target")
    assert_one_line_error(cli("matrix", missing, "--executor", "slurm"), 2, "serial, local, ray")
    assert not (tmp_path / "out").exists()


def _artifacts(out: Path) -> dict:
    """{(project/recipe/target, file): sha256} of every dist, and the manifests' figures
    without the clocked ones."""
    found, figures = {}, {}
    for manifest in sorted(out.glob("*/*/*/manifest.json")):
        where = str(manifest.parent.relative_to(out))
        doc = json.loads(manifest.read_text())
        for a in doc["artifacts"]:
            found[(where, a["file"])] = a["sha256"]
            figures[(where, a["file"])] = {k: v for k, v in a.items() if k not in CLOCKED and k != "measurements"}
    return found, figures


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory, _tiny_weights):
    """The tiny project (two targets) and the ONNX digits sample, copied once per executor
    so that each run computes everything itself (no cache shared between them)."""
    from conftest import TINY_DATA, TINY_MODEL, DEFAULT_TOML, TinyProject

    def make(folder: Path) -> Path:
        tiny = TinyProject(folder / "tiny")
        tiny.root.mkdir(parents=True)
        (tiny.root / "model.py").write_text(TINY_MODEL)
        (tiny.root / "data.py").write_text(TINY_DATA)
        (tiny.root / "weights.safetensors").write_bytes(_tiny_weights.read_bytes())
        tiny.write_toml(DEFAULT_TOML)
        _two_targets(tiny)
        shutil.copytree(REPO / "samples" / "digits", folder / "digits", ignore=shutil.ignore_patterns(".edgepack-cache", "dist"))
        shutil.copytree(REPO / "samples" / "onnx_digits", folder / "onnx_digits",
                        ignore=shutil.ignore_patterns(".edgepack-cache", "dist"))
        return _matrix(folder, '''
[[entries]]
project = "tiny"
targets = ["phone-a", "phone-b"]
[[entries]]
project = "onnx_digits"
targets = ["android"]
''')

    return make


@pytest.fixture(scope="module")
def serial_run(two_projects, tmp_path_factory):
    matrix = two_projects(tmp_path_factory.mktemp("serial"))
    run = cli("matrix", matrix, "--executor", "serial", "--json")
    assert run.code == 0, run.stderr
    return matrix.parent / "out", json.loads(run.stdout)


@pytest.mark.slow
def test_serial_local_pool_and_ray_give_the_same_artifacts_and_figures(serial_run, two_projects, tmp_path_factory):
    pytest.importorskip("ray", reason="the ray extra (pip install 'edgepack[ray]') is not installed")
    out, doc = serial_run
    assert doc["ok"] and all(s["status"] == "done" and s["attempts"] == 1 for s in doc["steps"])
    want, want_figures = _artifacts(out)
    threads = {s["result"]["intra_op_threads"] for s in doc["steps"]}
    assert len(threads) == 1
    assert len(want) == 3   # tiny for phone-a and phone-b, onnx-digits for android
    assert (out / "index.html").is_file() and "report" in (out / "index.html").read_text()
    for executor in ("local", "ray"):
        matrix = two_projects(tmp_path_factory.mktemp(executor))
        run = cli("matrix", matrix, "--executor", executor, "--json", *(["--workers", "2"] if executor == "local" else []))
        assert run.code == 0, run.stderr
        got, figures = _artifacts(matrix.parent / "out")
        assert got == want, executor
        assert figures == want_figures, executor
        result = json.loads(run.stdout)
        assert result["executor"] == executor
        # Every step ran with the driver's torch thread count (Ray's workers default to 1,
        # and a thread count changes torch's float sums, hence int8 bytes of larger models).
        assert {s["result"]["intra_op_threads"] for s in result["steps"]} == threads, executor


@pytest.mark.slow
def test_a_failed_step_stops_only_what_needs_it_and_is_listed(tmp_path, two_projects):
    matrix = two_projects(tmp_path)
    # The tiny project's calibration hook now raises: its prepare fails (bad input, not retried).
    data = tmp_path / "tiny" / "data.py"
    data.write_text(data.read_text() + "\n\ndef calibration():\n    raise RuntimeError('broken hook')\n")
    run = cli("matrix", matrix, "--executor", "local", "--workers", "2", "--json")
    assert run.code == 1, run.stderr
    doc = json.loads(run.stdout)
    status = {s["label"]: s for s in doc["steps"]}
    assert status["tiny/project: prepare"]["status"] == "failed"
    assert status["tiny/project: prepare"]["attempts"] == 1          # deterministic: not retried
    assert "broken hook" in status["tiny/project: prepare"]["errors"][0]
    assert status["tiny/project: build phone-a, phone-b"]["status"] == "skipped"
    assert status["onnx-digits/project: build android"]["status"] == "done"   # the rest went on
    assert [f["step"] for f in doc["failures"]] == ["tiny/project: prepare"]
    assert (tmp_path / "out" / "onnx-digits" / "project" / "android" / "manifest.json").is_file()
    assert not (tmp_path / "out" / "tiny").exists()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_ray_worker_killed_mid_step_is_retried_and_corrupts_nothing(serial_run, two_projects, tmp_path):
    pytest.importorskip("ray", reason="the ray extra (pip install 'edgepack[ray]') is not installed")
    matrix = two_projects(tmp_path)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "EDGEPACK_MATRIX_PIDS": str(pids), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "matrix", str(matrix), "--executor", "ray", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # The first worker that announces an export step: killed while the step runs.
    victim = _wait_for(lambda: next((p for p in pids.glob("*.pid") if "export" in p.read_text()), None), 300,
                       "an export step to start")
    time.sleep(1.0)   # into the step's work (loading, capturing)
    os.kill(int(victim.stem), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    doc = json.loads(stdout)
    killed = [s for s in doc["steps"] if s["kind"] == "export" and s["attempts"] == 2]
    assert len(killed) == 1 and killed[0]["status"] == "done", doc["steps"]
    got, figures = _artifacts(tmp_path / "out")
    want, want_figures = _artifacts(serial_run[0])
    assert got == want and figures == want_figures
    # No half-written cache entry or dist anywhere.
    assert not list(tmp_path.rglob(".tmp-*")) and not list(tmp_path.rglob("*.partial*"))


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_steps_and_keeps_finished_dists(two_projects, tmp_path):
    matrix = two_projects(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "matrix", str(matrix), "--executor", "serial"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    # Serial: the tiny project's build finishes first; interrupt while the ONNX sample's steps run.
    _wait_for(lambda: (tmp_path / "out" / "tiny" / "project" / "phone-b" / "manifest.json").is_file(), 600,
              "the first build's dists")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    doc = json.loads((tmp_path / "out" / "matrix.json").read_text())
    assert doc["interrupted"] is True and not doc["ok"]
    assert {s["status"] for s in doc["steps"] if s["label"].startswith("onnx-digits")} <= {"cancelled", "done"}
    for target in ("phone-a", "phone-b"):
        manifest = json.loads((tmp_path / "out" / "tiny" / "project" / target / "manifest.json").read_text())
        assert manifest["artifacts"]
    assert not list((tmp_path / "out").rglob("*.partial*"))
    # No step process outlives the matrix.
    assert not _worker_processes()


def _worker_processes() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"edgepack.matrix.worker" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:   # gone meanwhile
            pass
    return found
