"""Shared test helpers: tiny real projects written into a temporary folder, and a way to
run the real `edgepack` command and read its exit code and output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRESS_LINE = re.compile(r"^\[ *\d+\.\d s\] ")
DIGITS = REPO / "samples" / "digits"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With EDGEPACK_STRICT_SKIPS=1 (set by CI, which installs every tool) a test that
    skips, because a tool is missing, fails instead: a green run then means it ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("EDGEPACK_STRICT_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under EDGEPACK_STRICT_SKIPS=1: {reason}"

def tiny_model_with_forward(forward: str) -> str:
    """The text of a model.py with the tiny model's layers, so its trained weights load,
    and another forward(x) (`forward`: the method's body, indented 8 spaces)."""
    return f'''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
{forward}


def build():
    return Tiny()
'''


# The tiny model itself, plus factories that fail (bad-input tests).
TINY_MODEL = tiny_model_with_forward("        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))") + '''

def raises():
    raise RuntimeError("factory exploded")


def not_a_module():
    return {"weights": 1}
'''

# Three classes that a tiny CNN separates well: bright top, bright bottom, bright left.
TINY_DATA = '''
import numpy as np


def _make(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.1, size=(n, 1, 4, 4)).astype(np.float32)
    x[y == 0, :, :2, :] += 1.0
    x[y == 1, :, 2:, :] += 1.0
    x[y == 2, :, :, :2] += 1.0
    return x, y.astype(np.int64)


def calibration():
    return _make(64, 1)


def evaluation():
    return _make(90, 2)


def training():
    return _make(300, 3)


def empty():
    return np.zeros((0, 1, 4, 4), np.float32), np.zeros((0,), np.int64)


def wrong_shape():
    return np.zeros((8, 1, 5, 5), np.float32), np.zeros((8,), np.int64)
'''


def train_tiny(model_path: Path, weights_path: Path) -> None:
    """Train the tiny model for a few steps so its outputs are meaningful."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("tiny_model", model_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data_spec = importlib.util.spec_from_file_location("tiny_data", model_path.with_name("data.py"))
    data = importlib.util.module_from_spec(data_spec)
    data_spec.loader.exec_module(data)
    torch.manual_seed(0)
    model = mod.build()
    x, y = map(torch.from_numpy, data.training())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path))


ONNX_ONLY_TARGET = '''
name = "{name}"
device = "raspberry-pi-4"
[[artifacts]]
format = "onnx"
precision = "{precision}"
[budgets]
max_accuracy_drop_pt = {drop}
{extra}
'''


@dataclass
class TinyProject:
    root: Path

    def write_toml(self, text: str) -> None:
        (self.root / "edgepack.toml").write_text(textwrap.dedent(text))

    def add_target(self, name: str, *, precision: str = "int8", drop: float = 5.0, extra: str = "") -> None:
        (self.root / "targets").mkdir(exist_ok=True)
        (self.root / "targets" / f"{name}.toml").write_text(
            ONNX_ONLY_TARGET.format(name=name, precision=precision, drop=drop, extra=extra))


DEFAULT_TOML = '''
[project]
name = "tiny"
version = "0.1.0"

[model]
factory = "model.py:build"
weights = "weights.safetensors"
input_shape = [1, 1, 4, 4]

[data]
calibration = "data.py:calibration"
evaluation = "data.py:evaluation"
training = "data.py:training"

[build]
targets = ["onnx-only"]
warmup = 2
iterations = 5
'''


@pytest.fixture(scope="session")
def _tiny_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-weights")
    (folder / "model.py").write_text(TINY_MODEL)
    (folder / "data.py").write_text(TINY_DATA)
    train_tiny(folder / "model.py", folder / "weights.safetensors")
    return folder / "weights.safetensors"


@pytest.fixture
def tiny_project(tmp_path, _tiny_weights) -> TinyProject:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "model.py").write_text(TINY_MODEL)
    (root / "data.py").write_text(TINY_DATA)
    (root / "weights.safetensors").write_bytes(_tiny_weights.read_bytes())
    project = TinyProject(root)
    project.write_toml(DEFAULT_TOML)
    project.add_target("onnx-only")
    return project


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def cli(*args: str, cwd: Path | None = None, timeout: int = 900) -> Run:
    """Run the real command line in a child process, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(run: Run, code: int, *fragments: str) -> None:
    assert run.code == code, f"exit {run.code}, wanted {code}\nstdout:{run.stdout}\nstderr:{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    # Off a terminal, long commands print one "[  12.3 s] step" line per step first.
    lines = [ln for ln in run.stderr.strip().splitlines() if ln.strip() and not PROGRESS_LINE.match(ln)]
    assert lines and lines[0].startswith("error:"), run.stderr
    text = run.stderr.lower()
    for fragment in fragments:
        assert fragment.lower() in text, f"{fragment!r} not in: {run.stderr}"


@pytest.fixture(scope="session")
def digits_android(tmp_path_factory):
    """The digits sample built for android once per test run: (dist folder, --json result).
    Several test modules check these same real artifacts from different sides."""
    out = tmp_path_factory.mktemp("digits") / "dist"
    run = cli("build", "-p", DIGITS, "-t", "android", "-o", out, "--json", "--no-latency-gate")
    assert run.code == 0, run.stderr
    return out / "android", run.json()


@pytest.fixture(scope="session")
def digits_artifacts(digits_android) -> dict:
    """format -> path of the digits sample's int8 artifacts."""
    from edgepack.formats import FORMATS

    folder, _ = digits_android
    found = {fmt: folder / f"digits{ext}" for fmt, ext in FORMATS.extensions().items()}
    assert all(p.is_file() for p in found.values()), found
    return found


def load_sample_module(sample: Path, name: str):
    """Import a sample's `model.py` or `data.py` under a name of its own. The samples all
    call their files model.py and data.py, and import each other by those names: a plain
    import would hand one sample's module to another's test."""
    import importlib.util
    import sys

    shared = ("model", "data")
    saved = {k: sys.modules.pop(k) for k in shared if k in sys.modules}
    sys.path.insert(0, str(sample))
    try:
        spec = importlib.util.spec_from_file_location(f"_sample_{sample.name}_{name}", sample / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(sample))
        for k in shared:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


@pytest.fixture(scope="session")
def digits_evaluation_inputs():
    """The digits sample's evaluation images as one contiguous float32 array."""
    import numpy as np

    x, _ = load_sample_module(DIGITS, "data").evaluation()
    return np.ascontiguousarray(x, dtype=np.float32)


def snr_db(reference, output) -> float:
    """Signal-to-noise ratio of `output` against `reference`, dB, computed in float64."""
    import numpy as np

    noise = np.sum((reference.astype(np.float64) - output) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))


def exact_onnx_session(path):
    """An ONNX Runtime CPU session with its exact int8 kernels on x86: without VNNI its
    default ones saturate (u8*s8 pairs summed in 16 bits), and the device's ARM kernels do
    not; the build verifies with the same option."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
