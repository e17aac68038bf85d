"""A TensorFlow SavedModel folder as the source (`[model] saved_model = "exported/"`).

What TensorFlow writes with `tf.saved_model.save` or Keras' `model.export(path)`. Before
TensorFlow loads anything, sources.saved_model_scan reads the folder's protobuf and
refuses a model whose graph reaches outside itself (files, Python, custom ops); then
`tf.saved_model.load` restores it and the chosen signature (`model.signature`, default
"serving_default") is what the build runs and converts.

The signature's inputs are matched to the declared ones by name, or by position when
there is one; its outputs likewise (a dict: by key when the declared names are its keys).
The formats get one function with the declared names (`declared_function`), so every
artifact carries the project's interface, as from the other sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError
from edgepack.sources.foreign import ForeignModel, Interface, interface_problems

DEFAULT_SIGNATURE = "serving_default"


def _match(declared: tuple[str, ...], keys: list[str]) -> list[str]:
    """The signature's keys in declared order."""
    if set(declared) == set(keys):
        return list(declared)
    if len(declared) == len(keys) == 1:
        return keys
    return []


class SavedModel(ForeignModel):
    kind = "saved_model"

    def __init__(self, loaded, function, sha256: str, path: Path, input_keys, output_keys,
                 input_names, output_names, signature_shapes):
        super().__init__(sha256, input_names, output_names)
        self.loaded, self.function, self.path = loaded, function, path
        self.input_keys, self.output_keys = list(input_keys), list(output_keys)
        self.signature_shapes = [list(s) for s in signature_shapes]   # None: a dim the signature leaves free

    def run(self, inputs):
        import tensorflow as tf

        out = self.function(**{k: tf.constant(np.asarray(a)) for k, a in zip(self.input_keys, inputs)})
        return tuple(np.asarray(out[k]) for k in self.output_keys)

    def fixed_batch(self):
        first = self.signature_shapes[0]
        return first[0] if first and first[0] is not None else None

    def weights(self):
        return [np.asarray(v.numpy()) for v in self.function.variables if v.dtype.is_floating]

    def declared_function(self, shapes, dtypes):
        """A tf.function taking the declared inputs (in order, named as declared, of the
        given shapes: None for a dim left free) and returning a dict by declared output name."""
        import tensorflow as tf

        specs = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in zip(self.input_names, shapes, dtypes)]
        function, input_keys, output_keys, output_names = self.function, self.input_keys, self.output_keys, self.output_names

        @tf.function(input_signature=specs)
        def declared(*xs):
            out = function(**dict(zip(input_keys, xs)))
            return {name: tf.identity(out[key], name=name) for name, key in zip(output_names, output_keys)}

        return declared

    def layer_costs(self, example):
        return graph_costs(self.declared_function([x.shape for x in example], [x.dtype for x in example]))


def graph_costs(function) -> tuple[int, int]:
    """MACs of convolutions and matrix products and the elements of what they and pooling
    ops output (as devices.costs counts a torch model), from the frozen graph's static
    shapes: TensorFlow has no MAC counter for TF2 functions."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    macs = elements = 0

    def size(shape) -> int:
        dims = shape.as_list() if shape.rank is not None else []
        return int(np.prod([d or 1 for d in dims])) if dims else 0

    for op in frozen.graph.get_operations():
        kind = op.type
        if kind in ("Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMulV3",
                    "Conv2DBackpropInput"):
            out = size(op.outputs[0].shape)
            if kind in ("Conv2D", "Conv3D"):
                kernel = op.inputs[1].shape.as_list()
                macs += out * int(np.prod(kernel[:-1]))
            elif kind == "DepthwiseConv2dNative":
                kernel = op.inputs[1].shape.as_list()
                macs += out * int(np.prod(kernel[:2]))
            elif kind == "Conv2DBackpropInput":   # a transposed convolution: every input element meets the kernel
                kernel = op.inputs[1].shape.as_list()
                macs += size(op.inputs[2].shape) * int(np.prod(kernel[:2])) * int(kernel[2])
            else:
                a = op.inputs[0].shape.as_list()
                transposed = op.get_attr("transpose_a") if kind == "MatMul" else op.get_attr("adj_x")
                macs += out * int(a[-2] if transposed else a[-1])
            elements += out
        elif kind in ("MaxPool", "AvgPool", "MaxPoolV2", "AvgPool3D", "MaxPool3D"):
            elements += size(op.outputs[0].shape)
    return macs, elements


def _tree_sha256(folder: Path) -> str:
    """One digest of every file in the folder (relative path and bytes), in path order."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def load_saved_model(project_dir: Path, project) -> tuple[SavedModel, Path]:
    from edgepack.sources.keras_model import require_keras
    from edgepack.sources.saved_model_scan import scan

    src = project.model
    where = "edgepack.toml: model.saved_model"
    path = (project_dir / src.saved_model).resolve()
    if not path.exists():
        raise ConfigError(f"{where}: {path} not found")
    if not path.is_dir():
        raise ConfigError(f"{where}: {path} is a file; give the SavedModel's folder (the one holding saved_model.pb), "
                          "or a .keras archive as model.keras")
    outside = [p for p in path.rglob("*") if p.is_symlink() and not p.resolve().is_relative_to(path)]
    if outside:
        raise ConfigError(f"{where}: {outside[0]} links outside the SavedModel folder; copy the file into it")
    require_keras("saved_model")
    signature = src.signature or DEFAULT_SIGNATURE
    try:
        found = scan(path, signature)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if found.problems:
        raise ConfigError(f"{path}: {found.problems[0]}", problems=[f"{path}: {p}" for p in found.problems])

    import tensorflow as tf

    from edgepack._quiet import native_output_silenced

    try:
        with native_output_silenced():
            loaded = tf.saved_model.load(str(path), tags=["serve"])
    except Exception as e:  # TensorFlow's own loading errors, any type
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"{path}: TensorFlow cannot load the SavedModel: {type(e).__name__}: {first}") from None
    function = loaded.signatures[signature]
    _, kwargs = function.structured_input_signature
    input_keys = list(kwargs)
    outputs = function.structured_outputs
    output_keys = list(outputs) if isinstance(outputs, dict) else []

    declared_in, declared_out = tuple(s.name for s in src.input_specs), src.output_names
    keys_in = _match(declared_in, input_keys)
    if not keys_in:
        raise ConfigError(f"model.inputs: signature {signature!r} takes {len(input_keys)} input(s) named "
                          f"{', '.join(input_keys)}; declare them by those names (the order is the artifacts')")
    keys_out = _match(declared_out, output_keys)
    if not keys_out:
        raise ConfigError(f"model.outputs: signature {signature!r} returns {len(output_keys)} output(s) named "
                          f"{', '.join(output_keys) or '(none)'}; declare them by those names")
    # A signature input of unknown rank takes the declared one, every dim free.
    shapes = [kwargs[k].shape.as_list() if kwargs[k].shape.rank is not None else [None] * len(spec.shape)
              for k, spec in zip(keys_in, src.input_specs)]
    interface = [Interface(k, tuple(s), kwargs[k].dtype.name) for k, s in zip(keys_in, shapes)]
    problems = interface_problems(src.input_specs, interface, what=f"SavedModel signature {signature!r}")
    if problems:
        raise ConfigError(problems[0], problems=problems)
    model = SavedModel(loaded, function, _tree_sha256(path), path, keys_in, keys_out, declared_in, declared_out,
                       shapes)
    return model, path
