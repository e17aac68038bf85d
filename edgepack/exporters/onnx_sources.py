"""The fp32 .onnx of a non-PyTorch source, before exporters.onnx's conversions.

A Keras model goes through Keras 3's own `model.export(format="onnx")` (tf2onnx inside;
tf2onnx's `from_keras` cannot take Keras 3 tensors). A SavedModel's signature goes through
tf2onnx's `from_function`, as Keras' export does. An ONNX model is taken as it is,
its external data folded into one file. Either way the graph's inputs and outputs are
renamed to the project's declared names, so the artifact's interface is the one every
other format carries.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from edgepack.errors import ToolchainError


def _symbolic_dims(graph, input_names) -> dict[str, set[int]]:
    """Per graph input, the dims that are not fixed sizes."""
    return {i.name: {k for k, d in enumerate(i.type.tensor_type.shape.dim) if not d.HasField("dim_value")}
            for i in graph.input if i.name in set(input_names)}


def _applied_dims(req, graph) -> list[dict]:
    """The manifest's dynamic dims: the declared ones (each must be symbolic in the graph),
    else a symbolic batch dim (every input's dim 0), else none."""
    from edgepack.exporters.onnx import MAX_BATCH

    symbolic = _symbolic_dims(graph, req.input_names)
    if req.dynamic_dims:
        for name, dims in zip(req.input_names, req.dynamic_dims):
            fixed = [d.dim for d in dims if d.dim not in symbolic.get(name, set())]
            if fixed:
                raise ToolchainError(f"onnx: input {name!r} has a fixed size at dim {fixed[0]} in the source model; "
                                     "dynamic_dims can only keep dims the model leaves free", format="onnx", stage="export")
        return req.dims_record()
    if all(0 in symbolic.get(n, ()) for n in req.input_names):
        several = len(req.input_names) > 1
        return [{**({"input": n} if several else {}), "dim": 0, "name": "batch", "min": 1, "max": MAX_BATCH}
                for n in req.input_names]
    return []


def _name_dims(graph, applied: list[dict]) -> None:
    """Each dynamic dim the manifest records gets its recorded name in the graph (a
    converter's own are `unk__27` and the like), wherever that symbol appears."""
    several = len([i for i in graph.input if i.name not in {t.name for t in graph.initializer}]) > 1
    for entry in applied:
        for graph_input in graph.input:
            if several and entry.get("input") != graph_input.name:
                continue
            dims = graph_input.type.tensor_type.shape.dim
            if entry["dim"] >= len(dims):
                continue
            old = dims[entry["dim"]].dim_param
            dims[entry["dim"]].dim_param = entry["name"]
            if old:
                for value in [*graph.input, *graph.output, *graph.value_info]:
                    for d in value.type.tensor_type.shape.dim:
                        if d.dim_param == old:
                            d.dim_param = entry["name"]
            break


def _from_keras(req, folder: Path) -> Path:
    model = req.module.model
    out = folder / "keras.onnx"
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.ERROR)
    from edgepack._quiet import native_output_silenced

    try:
        # Keras and tf2onnx print the exported signature and log lines, some from C++.
        with native_output_silenced():
            model.export(str(out), format="onnx", verbose=False)
    finally:
        tf2onnx_log.setLevel(level)
    return out


def _from_saved_model(req, folder: Path) -> Path:
    import tf2onnx
    # Keras' own numpy-2 compatibility patch for tf2onnx 1.17 (np.object and friends),
    # the one Keras' ONNX export applies; tf2onnx has no release with the fix.
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    from edgepack._quiet import native_output_silenced

    model = req.module
    # The signature's own shapes: the dims it leaves free stay symbolic (_applied_dims
    # keeps the declared ones, or a free batch).
    declared = model.declared_function(model.signature_shapes, [x.dtype for x in req.example])
    out = folder / "saved_model.onnx"
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.ERROR)
    try:
        patch_tf2onnx()
        with native_output_silenced():
            tf2onnx.convert.from_function(declared, declared.input_signature, output_path=str(out))
    finally:
        tf2onnx_log.setLevel(level)
    return out


def write_fp32(req, path: Path) -> list[dict]:
    """Write the source's fp32 graph to `path` (one file) with the declared input and
    output names. Returns the dims left dynamic, as the manifest records them."""
    import onnx

    from edgepack.exporters import converting
    from edgepack.exporters.onnx import name_graph_io

    with tempfile.TemporaryDirectory() as tmp:
        if req.source_kind == "keras":
            with converting("onnx", "export", "Keras' ONNX export failed"):
                src = _from_keras(req, Path(tmp))
        elif req.source_kind == "saved_model":
            with converting("onnx", "export", "tf2onnx failed on the SavedModel's signature"):
                src = _from_saved_model(req, Path(tmp))
        else:
            src = req.module.path
        model = onnx.load_model(str(src), load_external_data=True)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != len(req.input_names) or len(model.graph.output) != len(req.output_names):
        raise ToolchainError(f"onnx: the exported graph has {len(inputs)} input(s) and {len(model.graph.output)} output(s); "
                             f"the project declares {len(req.input_names)} and {len(req.output_names)}",
                             format="onnx", stage="export")
    name_graph_io(model.graph, req.input_names, req.output_names)
    applied = _applied_dims(req, model.graph)
    _name_dims(model.graph, applied)
    onnx.save_model(model, str(path), save_as_external_data=False)
    onnx.checker.check_model(str(path))
    return applied
