"""What a bench's figures were measured on: the CPU's model name and whether it has
AVX512-VNNI (ONNX Runtime's x86 int8 kernels saturate without it), for every bench's
header or JSON."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    name = platform.processor() or platform.machine()
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = "AVX512-VNNI" if "avx512_vnni" in text else "no VNNI"
    except (OSError, StopIteration):
        pass
    cores = f"{os.cpu_count()} cores"
    return f"{name}, {flags}, {cores}" if flags else f"{name}, {cores}"
