"""Same inputs, same bytes, on every x86-64 build machine.

int8 artifacts carry activation ranges observed while the fp32 model runs on calibration
data, and compression passes train the model; both run torch's float convolutions on the
build host. Those go through oneDNN, which picks its kernels by the CPU's widest vector
ISA: an AVX-512 host sums a convolution in a different order from an AVX2 host, the last
bits of the activations differ, an observed range moves by one ulp and the quantization
scales, hence the LiteRT and ExecuTorch bytes, differ between two machines (measured on
samples/digits: the same build with oneDNN capped at AVX2 on an AVX-512 host gives the
bytes an AVX2-only host gives, and different bytes uncapped).

Capping oneDNN at AVX2, which every x86-64 build machine of the last decade has, makes
the float path, and so the artifacts, identical across them. oneDNN reads the cap when it
creates its first kernel, so this must run before any torch convolution in the process;
a cap the user set in the environment is respected and recorded as is. There is no such
switch for the order of float sums on other architectures (an arm64 build host), so
artifacts built there are reproducible among themselves, not against x86-64 builds.
"""

from __future__ import annotations

import os
import platform

ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
PINNED_ISA = "AVX2"


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_float_kernels() -> None:
    """Cap oneDNN at AVX2 on x86-64 unless the environment already says otherwise."""
    if _is_x86_64():
        os.environ.setdefault(ONEDNN_ISA_VARIABLE, PINNED_ISA)


def float_kernels() -> str:
    """How this build's float kernels were chosen, for the manifest's toolchain."""
    machine = platform.machine().lower() or "unknown"
    cap = os.environ.get(ONEDNN_ISA_VARIABLE)
    if cap:
        return f"{machine}, oneDNN ISA capped at {cap}"
    return f"{machine}, oneDNN ISA chosen by the CPU"


def reproducible_across() -> str:
    """Which build machines are expected to produce byte-identical artifacts from the
    same inputs and toolchain versions. torch sums large tensors in per-thread partials
    (the calibration observers' sums among them), so the intra-op thread count is one of
    the conditions: MobileNetV2's LiteRT and ExecuTorch int8 bytes differ at 1 and 2."""
    import torch

    threads = f"the same toolchain and torch intra-op thread count ({torch.get_num_threads()})"
    cap = os.environ.get(ONEDNN_ISA_VARIABLE)
    if _is_x86_64() and cap:
        return f"x86-64 build hosts with oneDNN capped at {cap} (any CPU with {cap} or wider), {threads}"
    return f"{platform.machine().lower() or 'this'} build hosts of the same CPU family, {threads}"
