"""An ONNX model as the source (`[model] onnx = "model.onnx"`), as a vendor delivers it.

Checked before ONNX Runtime sees it: a size limit, external weight files only inside the
model's own folder (a `location` naming an absolute path or climbing out with `..` is
refused: loading would read any file on the machine), and operators only from the
domains ONNX Runtime implements itself (a custom domain needs a custom-op library, which
edgepack never loads). Then onnx's checker and ONNX Runtime's CPU session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError
from edgepack.sources.foreign import ForeignModel, Interface, interface_problems

# A protobuf holds at most 2 GB; weights beyond that live in external files, whose total
# is capped too (an edge model is far smaller; a larger file is almost surely a mistake).
MAX_MODEL_BYTES = 2 * 1024**3
MAX_EXTERNAL_BYTES = 8 * 1024**3
# Operator domains ONNX Runtime's CPU provider implements without a custom-op library.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training")

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def _external_problems(model, folder: Path) -> tuple[list[str], int]:
    problems, total, seen = [], 0, set()
    for t in _initializers(model):
        location = next((e.value for e in t.external_data if e.key == "location"), None)
        if location is None or location in seen:
            continue
        seen.add(location)
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            problems.append(f"tensor {t.name!r} keeps its data in {location!r}, outside the model's folder; external "
                            "data must sit beside the .onnx")
        elif not target.is_file():
            problems.append(f"tensor {t.name!r} keeps its data in {location!r}, which is not there")
        else:
            total += target.stat().st_size
    return problems, total


def _initializers(model):
    from edgepack.exporters.onnx import graphs

    for g in graphs(model.graph):
        yield from g.initializer


def check_onnx_file(path: Path):
    """The parsed model (external data not loaded yet), or a ConfigError naming what is wrong."""
    import onnx

    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size / 1e9:.1f} GB, over the 2 GB an ONNX protobuf can hold")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # a protobuf decode error, any type
        raise ConfigError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    problems, external = _external_problems(model, path.parent.resolve())
    if external > MAX_EXTERNAL_BYTES:
        problems.append(f"its external data totals {external / 1e9:.1f} GB, over the {MAX_EXTERNAL_BYTES / 1e9:.0f} GB limit")
    custom = sorted({n.domain for n in model.graph.node if n.domain not in KNOWN_DOMAINS
                     and not any(f.domain == n.domain and f.name == n.op_type for f in model.functions)})
    if custom:
        problems.append(f"it uses operators of domain(s) {', '.join(custom)}, which need a custom-op library; "
                        "edgepack loads none: export the model with standard ONNX operators")
    if problems:
        raise ConfigError(f"{path}: {problems[0]}", problems=[f"{path}: {p}" for p in problems])
    return model


class OnnxModel(ForeignModel):
    kind = "onnx"

    def __init__(self, path: Path, model, session, sha256: str, input_names, output_names):
        super().__init__(sha256, input_names, output_names)
        self.path, self.model, self.session = path, model, session
        self._feeds = [i.name for i in session.get_inputs()]
        self._fetches = [o.name for o in session.get_outputs()]
        first = session.get_inputs()[0].shape
        self._fixed = first[0] if first and isinstance(first[0], int) else None

    def run(self, inputs):
        out = self.session.run(self._fetches, {n: np.ascontiguousarray(a) for n, a in zip(self._feeds, inputs)})
        return tuple(np.asarray(o) for o in out)

    def fixed_batch(self):
        return self._fixed

    def weights(self):
        from onnx import numpy_helper

        return [numpy_helper.to_array(t) for t in self.model.graph.initializer if t.data_type in (1, 10, 11)]

    def layer_costs(self, example):
        return onnx_layer_costs(self.model, example, self._feeds)


def onnx_layer_costs(model, example, feeds) -> tuple[int, int]:
    """MACs of Conv, ConvTranspose, Gemm and MatMul nodes and the elements of what they and
    pooling nodes output, from ONNX shape inference at the example's shapes."""
    import onnx
    from onnx import shape_inference

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    shapes = dict(zip(feeds, (x.shape for x in example)))
    for i in fixed.graph.input:
        if i.name in shapes:
            dims = i.type.tensor_type.shape.dim
            for d, v in zip(dims, shapes[i.name]):
                d.Clear()
                d.dim_value = int(v)
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # costs are informational: a graph shape inference cannot follow has none
        return 0, 0
    known = {}
    for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            known[v.name] = [d.dim_value for d in dims]
    for t in inferred.graph.initializer:
        known[t.name] = list(t.dims)
    macs = elements = 0
    for node in inferred.graph.node:
        out = known.get(node.output[0]) if node.output else None
        if out is None:
            continue
        n_out = int(np.prod(out))
        if node.op_type in ("Conv", "ConvTranspose"):
            w = known.get(node.input[1])
            if w:
                macs += n_out * int(np.prod(w[1:])) if node.op_type == "Conv" else int(np.prod(known.get(node.input[0], [0]))) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = known.get(node.input[0])
            if a:
                macs += n_out * a[-1]
        elif "Pool" not in node.op_type:
            continue
        elements += n_out
    return macs, elements


def load_onnx(project_dir: Path, project) -> tuple[OnnxModel, Path]:
    import onnx
    import onnxruntime as ort

    src = project.model
    path = (project_dir / src.onnx).resolve()
    if not path.is_file():
        raise ConfigError(f"edgepack.toml: model.onnx: {path} not found")
    model = check_onnx_file(path)
    digest = _digest(path, model)   # before the external data is loaded into the model
    try:
        onnx.checker.check_model(str(path))
        onnx.load_external_data_for_model(model, str(path.parent))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # the checker's and the runtime's refusals, any type
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"{path}: ONNX Runtime cannot load it: {type(e).__name__}: {first}") from None
    found = [Interface(i.name, tuple(d if isinstance(d, int) else None for d in i.shape),
                       _ort_dtype(i.type)) for i in session.get_inputs()]
    problems = interface_problems(src.input_specs, found, what="ONNX model")
    outputs = session.get_outputs()
    if len(outputs) != len(src.output_names):
        problems.append(f"model.outputs: the ONNX model has {len(outputs)} output(s) "
                        f"({', '.join(o.name for o in outputs)}), the project declares {len(src.output_names)} "
                        f"({', '.join(src.output_names)})")
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return OnnxModel(path, model, session, digest, [s.name for s in src.input_specs], src.output_names), path


def _digest(path: Path, model) -> str:
    """The .onnx file's hash, or with external data, the hash of the file and each data file."""
    import hashlib

    from edgepack.sources.pytorch import sha256_file

    locations = sorted({e.value for t in _initializers(model) for e in t.external_data if e.key == "location"})
    if not locations:
        return sha256_file(path)
    h = hashlib.sha256(sha256_file(path).encode())
    for loc in locations:
        h.update(f"{loc}:{sha256_file(path.parent / loc)}".encode())
    return h.hexdigest()


def _ort_dtype(t: str) -> str:
    """ONNX Runtime's 'tensor(float)' as numpy's name."""
    inner = t[t.find("(") + 1 : t.rfind(")")] if "(" in t else t
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(inner, inner)
