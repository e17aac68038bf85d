"""A Keras model as the source (`[model] keras = "model.keras"`).

Loaded without running code from the file: the `.keras` archive's config is read first
and refused when it holds a Lambda layer (whose Python bytecode Keras would run) or a
class from a module that is neither Keras' nor named by the project; then Keras loads it
in safe mode. A project whose model has custom layers names a hook returning them
(`custom_objects = "layers.py:custom_objects"`): that is the project's own code, which
edgepack runs like its data hooks. A legacy HDF5 file is refused (Keras loads Lambda
layers from it without safe mode).

TensorFlow is an optional dependency (`pip install 'edgepack[keras]'`); without it a
Keras project stops with one line saying so.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from edgepack.errors import ConfigError
from edgepack.sources.foreign import ForeignModel, Interface, interface_problems

INSTALL_HINT = "pip install 'edgepack[keras]' (TensorFlow and Keras 3)"


def require_keras(key: str = "keras"):
    """The keras module, or one ConfigError line naming the extra to install (`key`: the
    [model] key of the source that needs it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN's float kernels would make the reference outputs depend on the host's CPU
    # (and announce themselves on every import).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from edgepack._quiet import native_output_silenced

    try:
        with native_output_silenced():   # absl's "log messages before InitializeLog" line
            import keras
            import tensorflow  # noqa: F401  (the backend and the LiteRT converter)
    except ImportError:
        what = "a Keras source" if key == "keras" else "a TensorFlow SavedModel source"
        raise ConfigError(f"model.{key}: {what} needs TensorFlow, which is not installed; {INSTALL_HINT}") from None
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"model.{key}: Keras runs on the {keras.backend.backend()!r} backend; edgepack converts "
                          "Keras models and SavedModels with TensorFlow: set KERAS_BACKEND=tensorflow")
    return keras


def _config_of(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a Keras .keras archive ({type(e).__name__}); save the model with "
                          "model.save('model.keras')") from None


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def config_problems(config: dict, custom: set[str]) -> list[str]:
    """Lambda layers and classes from modules other than Keras' that the project did not
    name: what would make loading the file run code."""
    problems = []
    for obj in _walk(config):
        cls, module = obj.get("class_name"), obj.get("module")
        if not isinstance(cls, str):
            continue
        registered = obj.get("registered_name") or cls
        if cls == "Lambda" and module in (None, "keras.layers", "keras.src.layers"):
            name = (obj.get("config") or {}).get("name", "?")
            problems.append(f"layer {name!r} is a Lambda layer, whose Python code Keras would run on loading; "
                            "replace it with a layer class and name it in custom_objects")
        elif isinstance(module, str) and module.split(".")[0] not in ("keras", "builtins") and registered not in custom \
                and cls not in custom:
            problems.append(f"class {registered!r} comes from module {module!r}, which is not Keras; name it in "
                            "model.custom_objects (a project hook returning {name: class})")
    return list(dict.fromkeys(problems))


def _custom_objects(project_dir: Path, hook: str | None) -> dict:
    if not hook:
        return {}
    from edgepack.sources.hooks import call_hook

    found = call_hook(project_dir, hook, what="model.custom_objects")
    if not isinstance(found, dict) or not all(isinstance(k, str) for k in found):
        raise ConfigError(f"model.custom_objects {hook!r} returned {type(found).__name__}; it must return a dict "
                          "{class name: class}")
    return found


class KerasModel(ForeignModel):
    kind = "keras"

    def __init__(self, model, sha256: str, input_names, output_names):
        super().__init__(sha256, input_names, output_names)
        self.model = model

    def run(self, inputs):
        out = self.model([np.asarray(a) for a in inputs] if len(inputs) > 1 else np.asarray(inputs[0]), training=False)
        return tuple(np.asarray(o) for o in ordered_outputs(out, self.output_names))

    def weights(self):
        return [np.asarray(w) for w in self.model.weights if np.issubdtype(np.dtype(w.dtype), np.floating)]

    def layer_costs(self, example):
        return keras_layer_costs(self.model, batch=example[0].shape[0])


def ordered_outputs(out, names) -> list:
    """A Keras model's outputs (a tensor, a list, or a dict) in declared order: a dict by
    its keys when they are the declared names, else by position."""
    if isinstance(out, dict):
        if set(names) <= set(out):
            return [out[n] for n in names]
        out = list(out.values())
    if not isinstance(out, (list, tuple)):
        out = [out]
    if len(out) != len(names):
        raise ConfigError(f"model.outputs: the Keras model returns {len(out)} output(s), the project declares "
                          f"{len(names)} ({', '.join(names)})")
    return list(out)


def keras_layer_costs(model, *, batch: int) -> tuple[int, int]:
    """MACs of convolutions and dense layers and the elements of what they and pooling
    layers output (as devices.costs counts a torch model), from the layers' shapes."""
    import keras

    macs = elements = 0

    def size(shape) -> int:
        return int(np.prod([batch if d is None else d for d in shape]))

    def visit(layer):
        nonlocal macs, elements
        if hasattr(layer, "layers") and layer.layers:   # a nested model or block
            for inner in layer.layers:
                visit(inner)
            return
        try:
            out = size(layer.output.shape)
            inp = layer.input.shape
        except (AttributeError, ValueError):   # a layer used several times has no single output
            return
        kernel = getattr(layer, "kernel_size", None)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            macs += out * int(np.prod(kernel))
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            groups = getattr(layer, "groups", 1) or 1
            channels = inp[1] if getattr(layer, "data_format", "channels_last") == "channels_first" else inp[-1]
            macs += out * int(np.prod(kernel)) * (channels // groups)
        elif isinstance(layer, keras.layers.Dense):
            macs += out * inp[-1]
        elif "Pooling" not in type(layer).__name__:
            return
        elements += out

    visit(model)
    return macs, elements


def load_keras(project_dir: Path, project) -> tuple[KerasModel, Path]:
    from edgepack.sources.pytorch import sha256_file

    src = project.model
    path = (project_dir / src.keras).resolve()
    if path.is_dir():
        raise ConfigError(f"edgepack.toml: model.keras: {path} is a folder; model.keras is a Keras 3 .keras archive, "
                          "a TensorFlow SavedModel folder is given as model.saved_model")
    if not path.is_file():
        raise ConfigError(f"edgepack.toml: model.keras: {path} not found")
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise ConfigError(f"{path}: a legacy HDF5 Keras file, which Keras loads without safe mode; re-save it as "
                          ".keras (model.save('model.keras'))")
    config = _config_of(path)
    custom = _custom_objects(project_dir, src.custom_objects)
    problems = config_problems(config, set(custom))
    if problems:
        raise ConfigError(f"{path}: {problems[0]}", problems=[f"{path}: {p}" for p in problems])
    keras = require_keras()
    try:
        model = keras.saving.load_model(str(path), custom_objects=custom or None, compile=False, safe_mode=True)
    except Exception as e:  # Keras' own refusals and deserialization errors, any type
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"{path}: Keras cannot load it in safe mode: {type(e).__name__}: {first}") from None
    found = [Interface(t.name, tuple(t.shape), str(np.dtype(t.dtype)) if t.dtype else "") for t in model.inputs]
    problems = interface_problems(project.model.input_specs, found, what="Keras model")
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return KerasModel(model, sha256_file(path), [s.name for s in src.input_specs], src.output_names), path
