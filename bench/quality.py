"""int8 against fp32 for edgepack and the tools a team would otherwise use, side by side in
one run: same model, same calibration inputs, same evaluation inputs, same metrics.

    .venv/bin/python bench/quality.py [--projects samples/mobilenet_v2,zoo/efficientnet_lite0,samples/digits]
                                      [--no-olive] [--json] [--save FILE]

Columns (each cell: top-1 agreement with the fp32 model / logit SNR against it in dB,
then the seconds that tool took to write its artifact):

- edgepack tflite / pte / onnx: the build's own export step with the project's quantize
  stage (`edgepack.pipeline.export`, export cache off), as `edgepack build` writes them.
- LiteRT default: litert-torch's documented PT2E recipe (`PT2EQuantizer` with
  `get_symmetric_quantization_config(is_per_channel=True)`, `convert_pt2e(fold_quantize=False)`,
  `litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))`).
- ExecuTorch default: ExecuTorch's documented XNNPACK recipe (`XNNPACKQuantizer` with
  `get_symmetric_quantization_config(is_per_channel=True)`, `to_edge_transform_and_lower`
  with the XNNPACK partitioner).
- ORT default: `onnxruntime.quantization.quantize_static` with its default arguments on
  the fp32 ONNX edgepack exports (QDQ, MinMax, int8 activations and weights, per tensor).
- Olive: olive-ai 0.13.0's `OnnxStaticQuantization` pass with its defaults on the same
  fp32 ONNX, run by `olive run` in a virtualenv of its own (`.venv-olive`, created on first
  use: olive-ai pins versions that do not sit beside the toolchain), OLIVE_DISABLE_TELEMETRY=1.

Every artifact runs in its own runtime on this host (ai-edge-litert, ExecuTorch's
runtime with XNNPACK, ONNX Runtime with its exact x86 int8 kernels, as the build verifies:
the default ones saturate without AVX512-VNNI). The table's title names the host's CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _machine import describe as describe_machine  # noqa: E402  (bench/, this script's folder)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

OLIVE_VENV = REPO / ".venv-olive"
OLIVE_PINS = ("olive-ai==0.13.0", "requests", "onnxruntime==1.32.0", "onnx==1.23.2")
COLUMNS = ("edgepack tflite", "edgepack pte", "edgepack onnx", "LiteRT default", "ExecuTorch default",
           "ORT default", "Olive")


# ------------------------------------------------------------------------------ runtimes

FORMATS = {".tflite": "tflite", ".pte": "executorch", ".onnx": "onnx"}


def run(path: Path, x: np.ndarray) -> np.ndarray:
    """The first output of a one-input artifact on each sample, through the loaders the
    build's own runner uses (devices/runner_script.py: int8 I/O quantized from float,
    ONNX Runtime's exact x86 int8 kernels), one thread."""
    from edgepack.devices.runner_script import LOADERS

    infer = LOADERS[FORMATS[path.suffix]](str(path), 1)[0]
    return np.concatenate([infer([("input", np.ascontiguousarray(s[None]))])[0][1] for s in x])


def score(path: Path, x: np.ndarray, reference: np.ndarray) -> dict:
    from edgepack.verify.metrics import snr_db

    got = run(path, x).reshape(reference.shape)
    return {"agreement": float((got.argmax(1) == reference.argmax(1)).mean()), "snr_db": round(float(snr_db(reference, got)), 2)}


# ------------------------------------------------------------------------------ peers

def _calibrated(model, calibration: np.ndarray, quantizer, *, fold_quantize: bool):
    """The documented PT2E steps: capture at batch 1, prepare, one sample at a time
    through the observers, convert. Returns the converted module and the example."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.from_numpy(calibration[:1]),)
    prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    with torch.no_grad():
        for s in calibration:
            prepared(torch.from_numpy(s[None]))
    return convert_pt2e(prepared, fold_quantize=fold_quantize), example


def litert_default(model, calibration: np.ndarray, out: Path) -> None:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    converted, example = _calibrated(model, calibration, quantizer, fold_quantize=False)
    litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))


def executorch_default(model, calibration: np.ndarray, out: Path) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from executorch.exir import to_edge_transform_and_lower

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    converted, example = _calibrated(model, calibration, quantizer, fold_quantize=True)
    program = torch.export.export(converted, example)
    out.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)


def ort_default(fp32: Path, calibration: np.ndarray, out: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(calibration)

        def get_next(self):
            s = next(self.samples, None)
            return None if s is None else {name: s[None]}

    quantize_static(str(fp32), str(out), Reader())


OLIVE_SCRIPT = '''
import numpy as np
from olive.data.registry import Registry


class _Calibration:
    def __init__(self, path, name):
        self.x = np.load(path)["x"]
        self.name = name

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.name: self.x[i]}, 0   # the dataloader adds the batch dim


@Registry.register_dataset()
def edgepack_calibration(data_dir=None, path=None, name=None, **kwargs):
    return _Calibration(path, name)
'''


def olive_venv(say) -> Path | None:
    python = OLIVE_VENV / "bin" / "python"
    if not (OLIVE_VENV / ".installed").exists():
        say(f"creating {OLIVE_VENV} (torch==2.13.0, {' '.join(OLIVE_PINS)})")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(OLIVE_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *OLIVE_PINS], check=True)
        except subprocess.CalledProcessError as e:
            say(f"olive: the virtualenv could not be created ({e}); its column is left out")
            return None
        (OLIVE_VENV / ".installed").touch()
    return python


def olive(python: Path, fp32: Path, calibration: np.ndarray, out: Path) -> None:
    import onnxruntime as ort

    work = out.parent / "olive"
    work.mkdir()
    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    np.savez(work / "calibration.npz", x=calibration)
    (work / "user_script.py").write_text(OLIVE_SCRIPT)
    config = {
        "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [{"device": "cpu",
                                                                               "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [{"name": "calibration", "user_script": str(work / "user_script.py"),
                          "load_dataset_config": {"type": "edgepack_calibration",
                                                  "params": {"path": str(work / "calibration.npz"), "name": name}},
                          "dataloader_config": {"batch_size": 1}}],
        "passes": {"quantization": {"type": "OnnxStaticQuantization", "data_config": "calibration"}},
        "host": "local_system", "target": "local_system", "evaluate_input_model": False,
        "output_dir": str(work / "out"), "cache_dir": str(work / "cache"), "log_severity_level": 3,
    }
    (work / "config.json").write_text(json.dumps(config, indent=2))
    env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([str(python), "-m", "olive", "run", "--config", str(work / "config.json")],
                          capture_output=True, text=True, env=env, cwd=work)
    models = sorted((work / "out").rglob("*.onnx"))
    if done.returncode != 0 or not models:
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"olive run failed (exit {done.returncode}): {tail}")
    out.write_bytes(models[0].read_bytes())


# ------------------------------------------------------------------------------ one project

def measure(project: Path, *, with_olive: bool, say) -> list[dict]:
    from edgepack import api
    from edgepack._quiet import quiet_toolchains
    from edgepack.pipeline import export as export_step
    from edgepack.pipeline.compress import compress
    from edgepack.pipeline.load import load
    from edgepack.pipeline.records import ExportKey

    quiet_toolchains()
    plan = dataclasses.replace(api.make_plan(project), reuse_exports=False)
    name = plan.project.project.name
    loaded = load(plan, say)
    compressed = compress(plan, loaded, say)
    model = compressed.model
    (x,) = loaded.evaluation.x
    (calibration,) = loaded.calibration_x
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    reference = compressed.reference[0]
    rows = []

    def cell(column: str, path: Path, seconds: float) -> None:
        rows.append({"project": name, "column": column, "seconds": round(seconds, 1), "samples": len(x),
                     **score(path, x, reference)})
        say(f"{name}: {column} {rows[-1]['agreement'] * 100:.1f}% / {rows[-1]['snr_db']:.1f} dB")

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        start = time.perf_counter()
        rewritten = export_step.rewrite_for_int8(plan, model, loaded, say)
        rewrite_s = time.perf_counter() - start
        for fmt, column in (("tflite", "edgepack tflite"), ("executorch", "edgepack pte"), ("onnx", "edgepack onnx")):
            start = time.perf_counter()
            key = ExportKey(fmt, "int8", (), export_step.quantization_key("int8", plan.recipe.quantize))
            artifact = export_step.export(plan, key, file_name=f"{name}.{'pte' if fmt == 'executorch' else fmt}",
                                          model=model, loaded=loaded, dims=(), workspace=workspace, say=say,
                                          rewritten=rewritten)
            cell(column, artifact.path, time.perf_counter() - start + rewrite_s)
        start = time.perf_counter()
        fp32 = export_step.export(plan, ExportKey("onnx", "fp32", (), ""), file_name=f"{name}.onnx", model=model,
                                  loaded=loaded, dims=(), workspace=workspace, say=say).path
        fp32_s = time.perf_counter() - start
        say(f"{name}: fp32 ONNX for the ONNX peers in {fp32_s:.0f} s")
        peers = [("LiteRT default", ".tflite", lambda out: litert_default(model, calibration, out)),
                 ("ExecuTorch default", ".pte", lambda out: executorch_default(model, calibration, out)),
                 ("ORT default", ".onnx", lambda out: ort_default(fp32, calibration, out))]
        python = olive_venv(say) if with_olive else None
        if python is not None:
            peers.append(("Olive", ".onnx", lambda out: olive(python, fp32, calibration, out)))
        for column, suffix, make in peers:
            out = workspace / column.replace(" ", "_") / f"{name}{suffix}"
            out.parent.mkdir()
            say(f"{name}: {column}")
            start = time.perf_counter()
            try:
                make(out)
            except Exception as e:   # a peer that fails is a result too
                rows.append({"project": name, "column": column, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
                say(f"{name}: {column} failed: {rows[-1]['error']}")
                continue
            seconds = time.perf_counter() - start + (fp32_s if suffix == ".onnx" else 0.0)
            cell(column, out, seconds)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", default="samples/mobilenet_v2,zoo/efficientnet_lite0,samples/digits")
    parser.add_argument("--no-olive", action="store_true", help="leave Olive's column out (no .venv-olive)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args()
    err = Console(stderr=True)
    say = lambda m: err.print(f"  {m}", highlight=False)  # noqa: E731
    started = time.perf_counter()
    projects = args.projects.split(",")
    rows = []
    if len(projects) == 1:
        rows = measure(REPO / projects[0], with_olive=not args.no_olive, say=say)
    else:
        # One child process per project: converters keep state between models in one
        # process (litert-torch's layout pass refused EfficientNet-Lite0 after MobileNetV2's
        # exports, which it converts alone), and a user builds one project per process.
        for project in projects:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "rows.json"
                cmd = [sys.executable, __file__, "--projects", project, "--json", "--save", str(out)]
                subprocess.run(cmd + (["--no-olive"] if args.no_olive else []), stdout=subprocess.DEVNULL)
                if out.exists():
                    rows += json.loads(out.read_text())["rows"]
                else:
                    rows.append({"project": Path(project).name, "column": "edgepack tflite", "error": "the bench failed; see stderr"})
    doc = {"schema": "edgepack.bench.quality/1", "machine": describe_machine(), "total_seconds": round(time.perf_counter() - started, 1),
           "rows": rows}
    if args.save:
        args.save.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    table = Table(title=f"int8 vs fp32: top-1 agreement / logit SNR dB (seconds to write the artifact); host {doc['machine']}")
    table.add_column("project")
    table.add_column("n", justify="right")
    columns = [c for c in COLUMNS if any(r["column"] == c for r in rows)]
    for c in columns:
        table.add_column(c, justify="right")
    by = {(r["project"], r["column"]): r for r in rows}
    for project in dict.fromkeys(r["project"] for r in rows):
        n = next((r["samples"] for r in rows if r["project"] == project and "samples" in r), "-")

        def text(r):
            if r is None:
                return "-"
            if "error" in r:
                return "failed"
            return f"{r['agreement'] * 100:.1f}% / {r['snr_db']:.1f} ({r['seconds']:.0f} s)"

        table.add_row(project, str(n), *(text(by.get((project, c))) for c in columns))
    Console(width=260).print(table)
    for r in rows:
        if "error" in r:
            Console(width=260).print(f"{r['project']} {r['column']}: {r['error']}", highlight=False)
    Console().print(f"total {doc['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
