"""The host's int8 verdict does not depend on the build machine's x86 CPU.

ONNX Runtime's x86 int8 kernels without AVX512-VNNI add pairs of u8*s8 products in 16
bits and saturate; the runner script selects exact kernels on every x86 CPU. These tests
run the same artifact natively and on an emulated x86 CPU without VNNI (qemu-x86_64
-cpu Haswell: AVX2 only), so the non-VNNI path is exercised whatever machine runs them.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.devices.base import RUNNER_SCRIPT

pytestmark = pytest.mark.slow

QEMU_X86 = shutil.which("qemu-x86_64")
needs_x86_emulation = pytest.mark.skipif(platform.machine() != "x86_64" or QEMU_X86 is None,
                                         reason="needs an x86_64 host with qemu-x86_64 (Debian qemu-user)")
NO_VNNI_CPU = "Haswell"   # AVX2, no AVX512 and no VNNI


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - out) ** 2)))


def _run_script(artifact: Path, inputs: Path, tmp: Path, *, prefix: list[str]) -> np.ndarray:
    out, result = tmp / "out.npy", tmp / "result.json"
    cmd = [*prefix, sys.executable, str(RUNNER_SCRIPT), "--artifact", str(artifact), "--format", "onnx",
           "--inputs", str(inputs), "--outputs", str(out), "--result", str(result),
           "--warmup", "0", "--iterations", "1", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    doc = json.loads(result.read_text())
    assert doc.get("ok"), (doc.get("error"), proc.stderr[-2000:])
    assert doc["runtime"] == "onnxruntime", doc["runtime"]   # exact kernels, not the fallback
    return np.load(out)


@needs_x86_emulation
def test_onnx_int8_outputs_are_the_same_on_an_x86_cpu_without_vnni(digits_android, tmp_path):
    folder, _ = digits_android
    manifest = json.loads((folder / "manifest.json").read_text())
    vectors = manifest["test_vectors"]
    inputs = folder / vectors["inputs"]["file"]
    atol = vectors["outputs"]["digits.onnx"]["atol"]     # two output quantization steps
    native = _run_script(folder / "digits.onnx", inputs, tmp_path, prefix=[])
    emulated = _run_script(folder / "digits.onnx", inputs, tmp_path, prefix=[QEMU_X86, "-cpu", NO_VNNI_CPU])
    recorded = np.load(folder / vectors["outputs"]["digits.onnx"]["file"])
    assert np.max(np.abs(native - emulated)) <= atol
    assert np.max(np.abs(recorded - emulated)) <= atol


@needs_x86_emulation
def test_default_onnx_kernels_saturate_on_an_x86_cpu_without_vnni(digits_android, tmp_path):
    """The documented behaviour the runner script avoids: the same file with ONNX
    Runtime's default session options loses about half its SNR on a CPU without VNNI."""
    folder, _ = digits_android
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys, numpy as np, onnxruntime as ort\n"
        "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "x = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: x})[0])\n")
    reference = np.load(folder / "testdata" / "reference.npy")
    exact = _run_script(folder / "digits.onnx", folder / "testdata" / "inputs.npy", tmp_path, prefix=[])
    out = tmp_path / "default.npy"
    subprocess.run([QEMU_X86, "-cpu", NO_VNNI_CPU, sys.executable, str(probe), str(folder / "digits.onnx"),
                    str(folder / "testdata" / "inputs.npy"), str(out)], check=True, capture_output=True, timeout=600)
    saturated = np.load(out)
    # Measured on the digits sample with MinMax calibration: ~40.7 dB exact, ~20.6 dB saturated
    # (the default, mse, gives 39.8 dB exact on the build host).
    assert _snr_db(reference, exact) > 35.0
    assert _snr_db(reference, saturated) < _snr_db(reference, exact) - 10.0
