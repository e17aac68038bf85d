"""ONNX: one self-contained `.onnx` file (exporters/onnx.py), run by ONNX Runtime,
benchmarked on phones by `onnxruntime_perf_test`."""

from __future__ import annotations

import re
from pathlib import Path

from edgepack.errors import ToolchainError
from edgepack.formats.base import NUMBER, AdbTool, BenchmarkFigures, Format, lazy, tensor_io

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
           11: "float64", 16: "bfloat16"}


def signature(path: Path, details: dict) -> dict:
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}

    def conv(v):
        t = v.type.tensor_type
        shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
        return tensor_io(v.name, shape, _DTYPES.get(t.elem_type, str(t.elem_type)))

    return {"inputs": [conv(v) for v in model.graph.input if v.name not in inits],
            "outputs": [conv(v) for v in model.graph.output]}


def benchmark_command(binary: str, model: str, *, warmup: int, iterations: int, threads: int,
                      delegate: str | None = None) -> list[str]:
    # The CPU provider, as the build verified the file (no XNNPACK provider in the Linux
    # wheels): `-e xnnpack` would time kernels nothing here has checked.
    return [binary, "-m", "times", "-r", str(iterations), "-x", str(threads), "-y", "1", "-s", "-I", model]


def parse_onnxruntime_perf_test(text: str, *, warmup: int = 0) -> BenchmarkFigures:
    """ONNX Runtime's `onnxruntime_perf_test` (onnxruntime/test/perftest). Percentiles
    appear only with `-s`; they are printed in seconds, the averages in milliseconds.
    It reports the timed runs only (`warmup` needs no trimming)."""
    def find(pattern: str) -> float | None:
        m = re.search(pattern + r"\s*" + NUMBER, text)
        return float(m.group(1)) if m else None

    runs = find(r"Total inference requests:")
    mean = find(r"Average inference time cost:")
    if runs is None or mean is None:
        raise ToolchainError("onnxruntime_perf_test: no 'Average inference time cost' in its output (did it run?)",
                             format="onnx", stage="run")
    seconds = {name: find(rf"{name} Latency:") for name in ("Min", "Max", "P50", "P90", "P95", "P99")}
    ms = {k: None if v is None else v * 1e3 for k, v in seconds.items()}
    peak = find(r"Peak working set size:")
    threads = find(r"Setting intra_op_num_threads to")
    session_s = find(r"Session creation time cost:")
    return BenchmarkFigures(
        tool="onnxruntime_perf_test",
        iterations=int(runs),
        mean_ms=mean,
        init_ms=None if session_s is None else session_s * 1e3,
        first_inference_ms=find(r"First inference time cost:"),
        min_ms=ms["Min"], max_ms=ms["Max"], p50_ms=ms["P50"], p90_ms=ms["P90"], p95_ms=ms["P95"], p99_ms=ms["P99"],
        peak_rss_mb=None if peak is None else peak / 2**20,
        threads=None if threads is None else int(threads),
    )


CARD = """**Android (Kotlin, ONNX Runtime Mobile):** add `com.microsoft.onnxruntime:onnxruntime-android`.

```kotlin
val env = OrtEnvironment.getEnvironment()
val session = env.createSession(File(context.filesDir, "{file}").absolutePath, OrtSession.SessionOptions())
val x = OnnxTensor.createTensor(env, FloatBuffer.wrap(input), longArrayOf({in_shape_kt}))
val y = session.run(mapOf("{in_name}" to x))[0].value
```

**Linux (Python, `onnxruntime`):**

```python
import onnxruntime as ort
options = ort.SessionOptions()
# On x86 hosts: exact int8 kernels (without VNNI the default ones saturate); ARM needs nothing.
options.add_session_config_entry("session.x64quantprecision", "1")
session = ort.InferenceSession("{file}", options, providers=["CPUExecutionProvider"])
y = session.run(None, {{"{in_name}": x}})[0]   # x: float32 {in_shape}
```"""

FORMAT = Format(
    name="onnx",
    extension=".onnx",
    runtime="ONNX Runtime",
    # One step: the fp32 export, then onnxruntime's conversion for the precision
    # (exporters.onnx.CONVERSIONS).
    precisions={p: lazy("edgepack.exporters.onnx:export") for p in ("fp32", "fp16", "int8", "int8-dynamic")},
    signature=signature,
    loader="onnx",
    aarch64_wheels={"onnxruntime": "1.32.0"},
    board_modules={"onnxruntime": "onnxruntime"},
    adb=AdbTool("onnxruntime_perf_test", "/data/local/tmp/onnxruntime_perf_test", benchmark_command, parse_onnxruntime_perf_test),
    delegates=("xnnpack", "none"),
    card=CARD,
    toolchain=("onnx", "onnxruntime", "onnxscript", "onnxslim"),
    # The same step: a Keras model reaches ONNX through Keras' own export, a SavedModel
    # through tf2onnx, an ONNX model
    # is taken as it is; onnxruntime's conversions follow (exporters.onnx_sources).
    sources={kind: {p: lazy("edgepack.exporters.onnx:export") for p in ("fp32", "fp16", "int8", "int8-dynamic")}
             for kind in ("keras", "saved_model", "onnx")},
)
