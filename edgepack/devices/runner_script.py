#!/usr/bin/env python3
"""Run one model artifact on inputs from a .npy file and write one JSON result.

This file is copied as-is to wherever an artifact runs: the host, an emulated aarch64
Python, a board over ssh. It therefore imports only the standard library, numpy and the
artifact's own runtime (ai-edge-litert or tflite-runtime, onnxruntime, executorch), and
never anything from edgepack.

    python3 runner_script.py --artifact m.tflite --format tflite --inputs x.npy \
        --outputs y.npy --result r.json --warmup 10 --iterations 50 --threads 1

Loaders: the format's name picks one of the built-in loaders below (`--loader NAME` picks
another). A format edgepack does not build in ships its loader as a file beside this one
(`--loader-file loader.py`): a module with `load(path, threads) -> (run, runtime,
version)`, optionally `IMPORTS` (modules whose import time is the runtime's) and
`profile_ops(path, threads, sample, runs)`, under the same rules as this file.

Delegates: `--delegate NAME` (xnnpack or none) asks the loader to run the artifact with
that delegate, for formats whose runtime applies it at load time (LiteRT, ONNX Runtime; a
loader file's `load` then gets `delegate=NAME`). A loader may return a fourth item, what
it actually ran on: {"used": NAME, "detail": "..."}; the result's "delegate" holds it.

Inputs and outputs: `--inputs x.npy` holds the one input of a one-input model; `x.npz`
holds every input by its declared name, in declared order, fed by name where the format
names its inputs (LiteRT's signature, ONNX) and by position where it does not
(ExecuTorch). Every row is run one sample at a time (batch 1, as deployed; --batch N runs
N rows per call) and the outputs are stacked: `--outputs y.npz` gets every output, by the
runtime's name (`output_<i>` where it has none) in the runtime's order; `y.npy` the only
one. Timing: the first sample is run `warmup` times, then
`iterations` timed runs, before the pass over all rows. Exit status 0 on success;
otherwise the error is in the JSON.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback

SCHEMA = "edgepack.run/1"

# Marker syscalls bracket the timed loop so an instruction-counting emulator (qemu with
# edgepack's TCG plugin) can measure exactly that window. The number is not a syscall on
# any Linux architecture, so a kernel returns ENOSYS at once; they are issued only when
# EDGEPACK_MARKERS=1, because a seccomp filter (Android's, for one) may kill a process
# for an unknown syscall. Must equal the values in native/et_runner.cpp and insn_count.c.
MARKER_SYSCALL = 0xED9E
MARKER_MAGIC = 0x65646765
MARKER_START = 1
MARKER_STOP = 2


def _rss_mb():
    """Peak resident memory of this process so far, in MiB. VmHWM belongs to the address
    space created at exec; ru_maxrss would carry over the peak of the parent that forked
    us (Linux keeps it across execve), so it is only the fallback."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _marker_function():
    """A function issuing one marker, or a no-op when markers were not asked for."""
    if os.environ.get("EDGEPACK_MARKERS") != "1":
        return lambda phase: None
    import ctypes

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long]

    def marker(phase):
        syscall(MARKER_SYSCALL, MARKER_MAGIC, phase)

    return marker


def _tflite_delegate_nodes(interpreter):
    """Nodes of the execution plan handed to a delegate, or None where the interpreter
    does not list them: LiteRT's Python API has no public call for the plan's ops, and
    this private one (in both ai-edge-litert and tflite-runtime) is read defensively."""
    try:
        return sum(1 for op in interpreter._get_ops_details() if op.get("op_name") == "DELEGATE")
    except Exception:
        return None


def load_tflite(path, threads, delegate=None):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        runtime = "ai-edge-litert"
    except ImportError:  # the frozen predecessor, still common on boards
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        runtime = "tflite-runtime"
    import numpy as np

    # LiteRT applies its default delegate (XNNPACK) when loading; "none" keeps the
    # built-in kernels only.
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if delegate == "none" else OpResolverType.AUTO
    interpreter = Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    nodes = _tflite_delegate_nodes(interpreter)
    if delegate == "none":
        used = {"used": "none", "detail": "LiteRT built-in kernels (default delegates off)"}
    elif nodes is None:
        used = {"used": "xnnpack", "detail": "LiteRT default delegate (XNNPACK); the interpreter does not list delegated nodes"}
    else:
        used = {"used": "xnnpack" if nodes else "none",
                "detail": f"LiteRT default delegate XNNPACK: {nodes} delegate node(s) in the execution plan"}
    signature = interpreter.get_signature_list()
    if not signature:
        return _tflite_without_signature(interpreter, np), runtime, _version(runtime), used
    key = next(iter(signature))
    input_names, output_names = signature[key]["inputs"], signature[key]["outputs"]
    runner = interpreter.get_signature_runner(key)

    def run(feeds):
        details = runner.get_input_details()
        given = _by_name_or_position(feeds, input_names)
        kwargs = {}
        for name in input_names:
            x, d = given[name], details[name]
            if d["dtype"] in (np.int8, np.uint8) and np.issubdtype(x.dtype, np.floating):
                scale, zero = d["quantization"]
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
            kwargs[name] = x
        got = runner(**kwargs)
        out_details = runner.get_output_details()
        outputs = []
        for name in output_names:
            y, d = got[name], out_details[name]
            if d["dtype"] in (np.int8, np.uint8):
                scale, zero = d["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outputs.append((name, np.array(y)))
        return outputs

    return run, runtime, _version(runtime), used


def _tflite_without_signature(interpreter, np):
    """A .tflite with no signature (not one edgepack writes): its first input and output."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def run(feeds):
        nonlocal inp, out
        x = feeds[0][1]
        if tuple(inp["shape"]) != x.shape:
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]
            out = interpreter.get_output_details()[0]
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return [("output_0", np.array(y, dtype=np.float32))]

    return run


def _by_name_or_position(feeds, names):
    """{runtime input name: array}: by name when the feeds carry the runtime's names
    (declared names), else by position (a .npy file's one unnamed input)."""
    given = dict(feeds)
    if all(n in given for n in names):
        return given
    if len(feeds) != len(names):
        raise ValueError(f"the artifact takes {len(names)} input(s) ({', '.join(names)}); "
                         f"got {len(feeds)} ({', '.join(n for n, _ in feeds)})")
    return {n: a for n, (_, a) in zip(names, feeds)}


def onnx_options(threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if platform.machine().lower() in ("x86_64", "amd64"):
        # Without VNNI, MLAS's x86 u8*s8 kernels add pairs of products in 16 bits
        # (vpmaddubsw) and saturate: the same int8 file scores differently on two x86
        # hosts and on neither like the ARM device it ships to (whose kernels accumulate
        # exactly in 32 bits). This switch selects exact x86 kernels on every x86 CPU.
        options.add_session_config_entry("session.x64quantprecision", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def onnx_providers(delegate, threads):
    """ONNX Runtime's execution providers for a delegate: XNNPACK's where this build of
    ONNX Runtime has it (the Android package does; the x86-64 and aarch64 Linux wheels do
    not), with the CPU provider behind it for the ops XNNPACK does not take."""
    import onnxruntime as ort

    if delegate == "xnnpack" and "XnnpackExecutionProvider" in ort.get_available_providers():
        return [("XnnpackExecutionProvider", {"intra_op_num_threads": str(threads)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_onnx(path, threads, delegate=None):
    import onnxruntime as ort

    runtime = "onnxruntime"
    providers = onnx_providers(delegate, threads)
    try:
        session = ort.InferenceSession(path, onnx_options(threads), providers=providers)
    except Exception as e:
        if "replace the existing tensor" not in str(e):
            raise
        # A file whose Q/DQ nodes share one zero-point initializer (edgepack before it
        # stopped onnxslim's weight tying) loads only with the default kernels; the
        # runtime name says so wherever the figures are shown.
        options = onnx_options(threads)
        options.add_session_config_entry("session.x64quantprecision", "0")
        session = ort.InferenceSession(path, options, providers=providers)
        runtime = "onnxruntime (default x86 int8 kernels: the file shares zero-points)"
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]
    active = session.get_providers()
    detail = f"ONNX Runtime providers: {', '.join(active)}"
    if delegate == "xnnpack" and "XnnpackExecutionProvider" not in active:
        detail += (f" (this onnxruntime {ort.__version__} on {platform.machine()} has no XnnpackExecutionProvider; "
                   f"available: {', '.join(ort.get_available_providers())})")
    used = {"used": "xnnpack" if "XnnpackExecutionProvider" in active else "none", "detail": detail}

    def run(feeds):
        return list(zip(output_names, session.run(None, _by_name_or_position(feeds, input_names))))

    return run, runtime, ort.__version__, used


def _load_quantized_kernels():
    """ExecuTorch's int8 quantize/dequantize kernels, which a program lowered without a
    delegate calls. The Python runtime does not link them; the wheel ships them as a
    library that registers them when loaded (the native runner links it). Absent from a
    wheel: such a program then fails to load, naming the missing operator."""
    import ctypes

    import executorch

    for root in executorch.__path__:
        lib = os.path.join(root, "lib", "libexecutorch_kernels_quantized.so")
        if os.path.isfile(lib):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return


def load_executorch(path, threads, delegate=None):
    # The delegate of a .pte is in the file (chosen at export): nothing to choose here.
    import torch
    from executorch.runtime import Runtime

    _load_quantized_kernels()
    torch.set_num_threads(threads)
    try:  # XNNPACK's thread pool is separate from torch's; size it when the API exists
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):
        pass
    program = Runtime.get().load_program(path)
    method = program.load_method("forward")

    def run(feeds):
        # A .pte has no input or output names: inputs go by position, in declared order.
        outputs = method.execute([torch.from_numpy(a) for _, a in feeds])
        return [(f"output_{i}", y.numpy()) for i, y in enumerate(outputs)]

    return run, "executorch", _version("executorch")


LOADERS = {"tflite": load_tflite, "onnx": load_onnx, "executorch": load_executorch}


def profile_onnx_ops(path, threads, sample, runs):
    """Per-operator time from ONNX Runtime's own profiler, in a second session so the
    profiler's overhead never touches the timed loop. Returns rows by op type."""
    import json as _json

    import onnxruntime as ort

    options = onnx_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(sample[1])), "ort-profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = _by_name_or_position(sample[0], [i.name for i in session.get_inputs()])
    for _ in range(runs):
        session.run(None, feeds)
    trace = session.end_profiling()
    with open(trace) as f:
        events = _json.load(f)
    os.remove(trace)
    by_op = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            total, calls = by_op.get(op, (0.0, 0))
            by_op[op] = (total + e.get("dur", 0) / 1000.0, calls + 1)
    grand = sum(t for t, _ in by_op.values()) or 1.0
    rows = [{"op": op, "ms_per_inference": t / runs, "nodes": c // runs, "share": t / grand}
            for op, (t, c) in by_op.items()]
    return sorted(rows, key=lambda r: -r["ms_per_inference"])


OP_PROFILERS = {"onnx": profile_onnx_ops}


def _first_available(*names):
    import importlib.util

    for name in names:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            return [name]
    return []


IMPORTS = {
    "tflite": _first_available("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
    "onnx": ["onnxruntime"],
    "executorch": ["torch", "executorch.runtime"],
}


def _version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _loader_from_file(path):
    """(imports, load, profile_ops) of a loader module shipped beside this script. A loader
    file's `run` takes and returns one array (one input, one output)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgepack_format_loader", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def load(artifact, threads, **kw):
        loaded = module.load(artifact, threads, **kw)
        single = loaded[0]

        def run(feeds):
            if len(feeds) != 1:
                raise ValueError(f"this format's loader file takes one input; got {len(feeds)}")
            return [("output_0", single(feeds[0][1]))]

        return (run, *loaded[1:])

    return list(getattr(module, "IMPORTS", [])), load, getattr(module, "profile_ops", None)


def pick_loader(args):
    """(imports, load, profile_ops) for this run."""
    if args.loader_file:
        imports, load, profile_ops = _loader_from_file(args.loader_file)
        if args.delegate in (None, "none"):   # a loader file's protocol takes no delegate unless one is asked for
            return imports, load, profile_ops
        return imports, (lambda path, threads: load(path, threads, delegate=args.delegate)), profile_ops
    name = args.loader or args.format
    if name not in LOADERS:
        raise ValueError(f"no built-in loader {name!r}; built-in: {', '.join(sorted(LOADERS))} (or pass --loader-file)")
    load = LOADERS[name]
    return IMPORTS[name], (lambda path, threads: load(path, threads, delegate=args.delegate)), OP_PROFILERS.get(name)


def execute(args):
    import numpy as np

    inputs = _read_inputs(args.inputs)
    baseline_mb = _rss_mb()
    imports, load, profile_ops = pick_loader(args)
    t0 = time.perf_counter()
    for module in imports:  # import cost is the runtime's, not the model's
        __import__(module)
    import_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    loaded = load(args.artifact, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    run, runtime, runtime_version = loaded[:3]
    delegate = loaded[3] if len(loaded) > 3 else None

    batch = max(1, args.batch)
    samples = len(inputs[0][1])

    def rows(start, stop):
        return [(name, np.ascontiguousarray(a[start:stop])) for name, a in inputs]

    sample = rows(0, batch)
    t0 = time.perf_counter()
    run(sample)
    first_ms = (time.perf_counter() - t0) * 1e3

    marker = _marker_function()
    for _ in range(args.warmup):
        run(sample)
    latencies = []
    marker(MARKER_START)
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        run(sample)
        latencies.append((time.perf_counter() - t0) * 1e3)
    marker(MARKER_STOP)

    # The full pass over the inputs comes after the timed loop, so what precedes the timed
    # (and counted) window is the same whatever the number of inputs.
    outputs = [run(rows(i, i + batch)) for i in range(0, samples, batch)]
    _write_outputs(args.outputs, outputs)

    ops = None
    if args.op_profile and profile_ops:
        ops = profile_ops(args.artifact, args.threads, (sample, args.outputs), max(args.iterations, 10))

    return {
        "runtime": runtime,
        "runtime_version": runtime_version,
        "import_ms": import_ms,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latencies_ms": latencies,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "std_ms": statistics.pstdev(latencies),
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": _rss_mb(),
        "samples": int(samples),
        "ops": ops,
        "delegate": delegate,
    }


def _read_inputs(path):
    """[(name, array)] in file order: the one array of a .npy (named by position), or every
    array of a .npz. Float arrays are run as float32; integer inputs keep their dtype."""
    import numpy as np

    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        pairs = [("input_0", loaded)]
    else:
        with loaded:
            pairs = [(name, loaded[name]) for name in loaded.files]
    return [(n, a.astype(np.float32) if a.dtype == np.float64 else a) for n, a in pairs]


def _write_outputs(path, batches):
    """Each output stacked over the batches: all of them into a .npz, the only one into a .npy."""
    import numpy as np

    names = [name for name, _ in batches[0]]
    stacked = {name: np.concatenate([dict(b)[name] for b in batches], axis=0) for name in names}
    stacked = {n: a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a for n, a in stacked.items()}
    if path.endswith(".npz"):
        with open(path, "wb") as f:
            np.savez(f, **stacked)
        return
    if len(stacked) != 1:
        raise ValueError(f"the artifact has {len(stacked)} outputs ({', '.join(names)}); pass --outputs y.npz")
    np.save(path, next(iter(stacked.values())), allow_pickle=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--format", required=True, help="the artifact's format; also names its loader unless one is given")
    parser.add_argument("--loader", help="a built-in loader by name: " + ", ".join(sorted(LOADERS)))
    parser.add_argument("--loader-file", help="a loader module shipped beside this script (see the top of this file)")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--delegate", choices=["xnnpack", "none"],
                        help="run with this delegate, for runtimes that apply one when loading (tflite, onnx)")
    parser.add_argument("--op-profile", action="store_true",
                        help="also time each operator where the runtime exposes it (ONNX Runtime's profiler)")
    parser.add_argument("--batch", type=int, default=1,
                        help="samples per call (1 as deployed; more to check an artifact with a dynamic batch)")
    args = parser.parse_args(argv)
    result = {
        "schema": SCHEMA,
        "format": args.format,
        "artifact": os.path.basename(args.artifact),
        "threads": args.threads,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    status = 0
    try:
        result.update(execute(args))
        result["ok"] = True
    except Exception as e:  # reported in the JSON for the caller to word; never silent
        result.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        status = 1
    tmp = args.result + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.result)
    return status


if __name__ == "__main__":
    sys.exit(main())
