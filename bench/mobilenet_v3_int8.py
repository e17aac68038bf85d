"""Int8 coverage of the standard mobile ops on MobileNetV3-Small and -Large, per format.

    .venv/bin/python bench/mobilenet_v3_int8.py [--models mobilenet_v3_small,mobilenet_v3_large]
        [--formats tflite,executorch,onnx] [--size 224] [--calibration 16] [--json]

Each model (edgepack.devices.reference_models: torchvision's module tree, seeded random
weights) is exported int8 by edgepack's own exporters, calibrated on N seeded normal
inputs, and run in its own runtime on 16 other ones. Per artifact: whether it built,
the conversion time, which of hard-swish, hard-sigmoid, the squeeze-excite multiply, the
residual add, the global mean and concat were left in float, the logit SNR against the
fp32 torch model and the top-1 agreement. Random weights say nothing about accuracy; the
SNR says how much int8 rounding changes the same function.

With random weights and BatchNorm's initial statistics (mean 0, variance 1) the
activations shrink about tenfold per block (MobileNetV3-Small's logits end near 1e-9)
and int8 rounds everything to zero. So the BatchNorm statistics are first re-estimated
on 32 other seeded inputs (a cumulative average in train mode), which leaves every
block's output with a standard deviation near 1, as in a trained model.

Where an op is float: LiteRT, the float32 ops in the converted file (`float_ops`);
ONNX, the nodes of those types that are not a QDQ unit or have no int8 kernel in
ONNX Runtime (they run dequantized);
ExecuTorch, the nodes of those types that torchao's XNNPACKQuantizer leaves unannotated
(and the ops the XNNPACK delegate left to the portable kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MOBILE_OPS = {"hardswish", "hardsigmoid", "mul", "add", "mean", "adaptive_avg_pool2d", "cat"}
ONNX_MOBILE_OPS = {"HardSwish", "HardSigmoid", "Mul", "Add", "ReduceMean", "GlobalAveragePool", "Concat"}


def _pt2e_unannotated(model, example) -> dict:
    """Mobile ops of the captured graph that XNNPACKQuantizer gives no annotation."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    gm = torch.export.export(model, (torch.from_numpy(example),)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.annotate(quantizer.transform_for_annotation(gm))
    left: dict[str, int] = {}
    for n in gm.graph.nodes:
        name = getattr(n.target, "__name__", str(n.target)).split(".")[0]
        annotation = n.meta.get("quantization_annotation")
        if n.op == "call_function" and name in MOBILE_OPS and not (annotation and annotation._annotated):
            left[name] = left.get(name, 0) + 1
    return left


def _onnx_float(path: Path) -> dict:
    """Mobile ops ONNX Runtime computes in float: not a QDQ unit (every float input through
    DequantizeLinear, every output only into QuantizeLinear), or an op type with no int8
    (QLinear*) kernel among the operator schemas of the installed onnxruntime."""
    import onnx
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

    int8_kernels = {s.name[len("QLinear"):] for s in ort_c.get_all_operator_schema() if s.name.startswith("QLinear")}
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    not_float = {i.name for i in graph.initializer if i.data_type not in float_types}   # e.g. ReduceMean's axes
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    left: dict[str, int] = {}
    for n in graph.node:
        unit = all(i in dequantized or i in not_float for i in n.input if i) and all(
            consumers.get(o) and set(consumers[o]) == {"QuantizeLinear"} for o in n.output)
        if n.op_type in ONNX_MOBILE_OPS and not (unit and n.op_type in int8_kernels):
            left[n.op_type] = left.get(n.op_type, 0) + 1
    return left


def _normalized(model, size: int):
    """`model` with BatchNorm statistics measured on seeded inputs (see above)."""
    import torch

    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None   # a cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(2).normal(size=(32, 3, size, size)).astype(np.float32)))
    return model.eval()


def measure(name: str, fmt: str, *, size: int, n_calibration: int, out: Path) -> dict:
    import torch

    from edgepack.devices.reference_models import build
    from edgepack.devices.runner_script import LOADERS
    from edgepack.exporters import ExportRequest, export
    from edgepack.verify.metrics import snr_db

    model = _normalized(build(name, seed=0), size)
    calibration = np.random.default_rng(0).normal(size=(n_calibration, 3, size, size)).astype(np.float32)
    evaluation = np.random.default_rng(1).normal(size=(16, 3, size, size)).astype(np.float32)
    request = ExportRequest(module=model, example=(calibration[:1],), calibration=(calibration,), precision="int8",
                            out_path=out / f"{name}.{fmt}", input_names=("x",), output_names=("logits",), parent_sha256="")
    row = {"model": name, "format": fmt}
    start = time.perf_counter()
    try:
        details = export(fmt, request).details
    except Exception as e:  # a refusal is a result here
        return {**row, "built": False, "error": str(e).splitlines()[0][:200], "seconds": time.perf_counter() - start}
    row["seconds"] = time.perf_counter() - start
    row["built"] = True
    if fmt == "tflite":
        row["float_ops"] = details.get("float_ops", {})
        row["tensors_by_dtype"] = details["tensors_by_dtype"]
    elif fmt == "onnx":
        row["float_ops"] = _onnx_float(request.out_path)
    else:
        row["float_ops"] = _pt2e_unannotated(model, calibration[:1])
        row["non_delegated_ops"] = details.get("non_delegated_ops", {})
    run = LOADERS[fmt](str(request.out_path), 1)[0]
    with torch.no_grad():
        reference = model(torch.from_numpy(evaluation)).numpy()
    got = np.concatenate([run(evaluation[i : i + 1]) for i in range(len(evaluation))])
    row["snr_db"] = round(snr_db(reference, got), 2)
    row["agreement_pct"] = round(100.0 * float(np.mean(reference.argmax(1) == got.argmax(1))), 1)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v3_small,mobilenet_v3_large")
    parser.add_argument("--formats", default="tflite,executorch,onnx")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for fmt in args.formats.split(","):
                rows.append(measure(name, fmt, size=args.size, n_calibration=args.calibration, out=Path(tmp)))
                print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MobileNetV3 int8 at {args.size}x{args.size}, random weights (seed 0), "
                        f"{args.calibration} calibration inputs, 16 evaluation inputs")
    for col in ("model", "format", "built", "float ops", "SNR dB", "agree", "export s"):
        table.add_column(col)
    for r in rows:
        left = ", ".join(f"{k} x{v}" for k, v in sorted(r.get("float_ops", {}).items())) or "none"
        table.add_row(r["model"], r["format"], "yes" if r["built"] else f"no: {r['error']}",
                      left if r["built"] else "", f"{r['snr_db']:.1f}" if r["built"] else "",
                      f"{r['agreement_pct']:.0f}%" if r["built"] else "", f"{r['seconds']:.0f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
