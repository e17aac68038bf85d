"""LiteRT (TFLite): `.tflite` files written by litert-torch (exporters/tflite.py), run by
ai-edge-litert or tflite-runtime, benchmarked on phones by LiteRT's `benchmark_model`."""

from __future__ import annotations

import re
from pathlib import Path

from edgepack.errors import ConfigError, ToolchainError
from edgepack.formats.base import NUMBER, AdbTool, BenchmarkFigures, Format, lazy, tensor_io


def signature(path: Path, details: dict) -> dict:
    """Read from the exporter's own description of the file (exporters.tflite.describe),
    which loaded it in the interpreter once already."""
    if "inputs" not in details:
        raise ConfigError(f"{path.name}: no tensor details recorded by the tflite exporter")

    def conv(d):
        return tensor_io(d["name"], list(d["shape"]), d["dtype"], d.get("scale"), d.get("zero_point"))

    return {"inputs": [conv(d) for d in details["inputs"]], "outputs": [conv(d) for d in details["outputs"]]}


def benchmark_command(binary: str, model: str, *, warmup: int, iterations: int, threads: int,
                      delegate: str | None = None) -> list[str]:
    words = [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
             f"--num_runs={iterations}", "--min_secs=0", "--warmup_min_secs=0"]
    # benchmark_model applies XNNPACK by default; only an explicit false turns it off.
    return words + ([f"--use_xnnpack={'false' if delegate == 'none' else 'true'}"] if delegate else [])


def _stat_line(line: str) -> dict[str, float]:
    """`count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929` (and, in
    newer LiteRT, `p5=... median=... p95=...`), or `count=3 curr=5(all same)`."""
    return {k: float(v) for k, v in re.findall(r"\b(\w+)=" + NUMBER, line)}


def parse_benchmark_model(text: str, *, warmup: int = 0) -> BenchmarkFigures:
    """LiteRT/TFLite `benchmark_model` (tensorflow/lite/tools/benchmark). Its two
    "Running benchmark for at least N iterations" blocks are the warm-up and the timed
    runs, each closed by a stat line in microseconds (so `warmup` needs no trimming)."""
    stats, threads, init_ms, summary = [], None, None, {}
    for line in text.splitlines():
        body = re.sub(r"^(INFO|VERBOSE|WARNING): ", "", line.strip())
        if body.startswith("count="):
            stats.append(_stat_line(body))
        elif m := re.match(r"Num threads: \[(\d+)\]", body):
            threads = int(m.group(1))
        elif m := re.match(r"Initialized session in " + NUMBER + r"\s*ms", body):
            init_ms = float(m.group(1))
        elif body.startswith(("Inference timings in us:", "Average inference timings in us:")):
            summary = {k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ()]+): " + NUMBER, body.split(":", 1)[1])}
    if not stats or "count" not in stats[-1]:
        raise ToolchainError("benchmark_model: no timing statistics in its output (did it run?)", format="tflite", stage="run")
    timed = stats[-1]
    warm = stats[0] if len(stats) > 1 else {}
    us = 1e-3
    mean = timed.get("avg", timed.get("curr"))
    peak = None
    if m := re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init=" + NUMBER + r" overall=" + NUMBER, text):
        peak = float(m.group(2))
    first = summary.get("First inference")
    if first is None and warm:
        first = warm.get("first")
    return BenchmarkFigures(
        tool="benchmark_model",
        iterations=int(timed["count"]),
        mean_ms=mean * us,
        init_ms=init_ms if init_ms is not None else (summary["Init"] * us if "Init" in summary else None),
        first_inference_ms=None if first is None else first * us,
        warmup_mean_ms=warm.get("avg", warm.get("curr")) * us if warm else None,
        std_ms=timed.get("std", 0.0) * us,
        min_ms=timed.get("min", mean) * us,
        max_ms=timed.get("max", mean) * us,
        p50_ms=timed["median"] * us if "median" in timed else None,
        p95_ms=timed["p95"] * us if "p95" in timed else None,
        peak_rss_mb=peak,
        threads=threads,
    )


CARD = """**Android (Kotlin, LiteRT):** add `com.google.ai.edge.litert:litert` and put `{file}` in `assets/`.

```kotlin
val model = FileUtil.loadMappedFile(context, "{file}")
val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(2))
val input = ByteBuffer.allocateDirect({in_bytes}).order(ByteOrder.nativeOrder())   // {in_desc}
val output = ByteBuffer.allocateDirect({out_bytes}).order(ByteOrder.nativeOrder()) // {out_desc}
interpreter.run(input, output)
```

**Linux (Python, `ai-edge-litert` or `tflite-runtime`):**

```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter   # or: from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_path="{file}", num_threads=2); it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
{quantize}it.set_tensor(inp["index"], x); it.invoke(); y = it.get_tensor(out["index"])
{dequantize}```"""

CARD_WITHOUT_DELEGATE = """**Android (Kotlin, LiteRT):** add `com.google.ai.edge.litert:litert` and put `{file}` in `assets/`.

```kotlin
val model = FileUtil.loadMappedFile(context, "{file}")
val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(2).setUseXNNPACK(false))   // built-in kernels, as verified
val input = ByteBuffer.allocateDirect({in_bytes}).order(ByteOrder.nativeOrder())   // {in_desc}
val output = ByteBuffer.allocateDirect({out_bytes}).order(ByteOrder.nativeOrder()) // {out_desc}
interpreter.run(input, output)
```

**Linux (Python, `ai-edge-litert` or `tflite-runtime`):**

```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType   # or: from tflite_runtime.interpreter import ...
it = Interpreter(model_path="{file}", num_threads=2,   # built-in kernels, no XNNPACK: as verified
                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES); it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
{quantize}it.set_tensor(inp["index"], x); it.invoke(); y = it.get_tensor(out["index"])
{dequantize}```"""

FORMAT = Format(
    name="tflite",
    extension=".tflite",
    runtime="LiteRT (TFLite)",
    precisions={p: lazy(f"edgepack.exporters.tflite:{fn}") for p, fn in
                (("fp32", "export_fp32"), ("fp16", "export_fp16"), ("int8", "export_int8"), ("int8-dynamic", "export_int8_dynamic"))},
    signature=signature,
    loader="tflite",
    aarch64_wheels={"ai-edge-litert": "2.3.0"},
    board_modules={"ai_edge_litert": "ai-edge-litert (or tflite-runtime)", "tflite_runtime": "ai-edge-litert (or tflite-runtime)"},
    adb=AdbTool("benchmark_model", "/data/local/tmp/benchmark_model", benchmark_command, parse_benchmark_model),
    delegates=("xnnpack", "none"),
    card=CARD,
    card_without_delegate=CARD_WITHOUT_DELEGATE,
    toolchain=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"),
    # TensorFlow's own converter (the `keras` extra), for a Keras model and a SavedModel.
    sources={kind: {p: lazy(f"edgepack.exporters.tflite_tensorflow:{fn}") for p, fn in
                    (("fp32", "export_fp32"), ("fp16", "export_fp16"), ("int8", "export_int8"),
                     ("int8-dynamic", "export_int8_dynamic"))}
             for kind in ("keras", "saved_model")},
)
