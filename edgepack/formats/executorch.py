"""ExecuTorch: `.pte` programs lowered to XNNPACK (exporters/executorch.py), run by
ExecuTorch's Python runtime on the host and by the native et_runner on aarch64,
benchmarked on phones by `executor_runner`."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from edgepack.errors import ToolchainError
from edgepack.formats.base import NUMBER, AdbTool, BenchmarkFigures, Format, lazy, percentile, tensor_io

# ExecuTorch's ScalarType codes (c10), for the .pte method signature.
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
           11: "bool", 15: "bfloat16"}


def signature(path: Path, details: dict) -> dict:
    from executorch.runtime import Runtime

    meta = Runtime.get().load_program(str(path)).metadata("forward")

    def conv(kind: str, i: int, t):
        return tensor_io(f"{kind}_{i}", [int(s) for s in t.sizes()], _DTYPES.get(int(t.dtype()), str(t.dtype())))

    return {"inputs": [conv("input", i, meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            "outputs": [conv("output", i, meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]}


def benchmark_command(binary: str, model: str, *, warmup: int, iterations: int, threads: int,
                      delegate: str | None = None) -> list[str]:
    # No warm-up flag: the warm-up runs are extra executions the parser drops. No
    # delegate flag either: a .pte carries its delegate.
    return [binary, f"--model_path={model}", f"--num_executions={warmup + iterations}", f"--cpu_threads={threads}",
            "--print_output=none"]


def parse_executor_runner(text: str, *, warmup: int = 0) -> BenchmarkFigures:
    """ExecuTorch's `executor_runner` (examples/portable/executor_runner), also built as
    `xnn_executor_runner`. It has no warm-up flag: the first `warmup` of its
    per-iteration lines are dropped. Releases that print no per-iteration lines give
    only the total, hence only a mean."""
    iterations = [float(v) for v in re.findall(r"Iteration \d+ of \d+: " + NUMBER + " ms", text)]
    total = re.search(r"Model executed successfully (\d+) time\(s\) in " + NUMBER + " ms", text)
    if total is None:
        raise ToolchainError("executor_runner: no 'Model executed successfully' in its output (did it run?)",
                             format="executorch", stage="run")
    loaded = re.search(r"Model loaded in " + NUMBER + " ms", text)
    threads = re.search(r"Resetting threadpool with num threads = (\d+)", text)
    common = {
        "tool": "executor_runner",
        "init_ms": float(loaded.group(1)) if loaded else None,
        "threads": int(threads.group(1)) if threads else None,
    }
    if not iterations:
        count, ms = int(total.group(1)), float(total.group(2))
        return BenchmarkFigures(iterations=count, mean_ms=ms / count, **common)
    timed = iterations[warmup:] or iterations
    return BenchmarkFigures(
        iterations=len(timed),
        mean_ms=statistics.fmean(timed),
        first_inference_ms=iterations[0],
        warmup_mean_ms=statistics.fmean(iterations[:warmup]) if warmup else None,
        std_ms=statistics.pstdev(timed),
        min_ms=min(timed), max_ms=max(timed),
        p50_ms=percentile(timed, 50), p90_ms=percentile(timed, 90), p99_ms=percentile(timed, 99),
        **common,
    )


CARD = """**Android (Kotlin, ExecuTorch; the program carries its delegate):** add `org.pytorch:executorch-android`.

```kotlin
val module = Module.load(File(context.filesDir, "{file}").absolutePath)
val x = Tensor.fromBlob(FloatArray({in_numel}), longArrayOf({in_shape_kt}))
val y = module.forward(EValue.from(x))[0].toTensor().dataAsFloatArray
```

**Linux (Python, `executorch`):**

```python
import torch
from executorch.runtime import Runtime
method = Runtime.get().load_program("{file}").load_method("forward")
y = method.execute([torch.from_numpy(x)])[0].numpy()   # x: float32 {in_shape}
```"""

FORMAT = Format(
    name="executorch",
    extension=".pte",
    runtime="ExecuTorch",
    precisions={p: lazy(f"edgepack.exporters.executorch:{fn}") for p, fn in
                (("fp32", "export_fp32"), ("fp16", "export_fp16"), ("int8", "export_int8"), ("int8-dynamic", "export_int8_dynamic"))},
    signature=signature,
    loader="executorch",
    # ExecuTorch's Python runtime needs an aarch64 torch; on aarch64 the native runner,
    # linked against the wheel's C++ libraries, speaks the runner script's protocol.
    native_runner="et_runner",
    aarch64_wheels={"executorch": "1.5.1"},
    board_modules={"torch": "torch executorch", "executorch": "executorch"},
    adb=AdbTool("executor_runner", "/data/local/tmp/xnn_executor_runner", benchmark_command, parse_executor_runner),
    delegates=("xnnpack", "none"),
    delegate_in_file=True,
    card=CARD,
    toolchain=("executorch",),
)
