"""LiteRT (TFLite) from a Keras model or a TensorFlow SavedModel: TensorFlow's own
converter, the path LiteRT documents for both.

A Keras model is wrapped in a functional model whose inputs carry the declared names and
shapes and which returns a dict keyed by the declared output names
(`TFLiteConverter.from_keras_model`); a SavedModel's signature is wrapped in a
tf.function with the same interface (`TFLiteConverter.from_concrete_functions`). The
converter names the signature after them, so the artifact's interface is the project's,
as from PyTorch.

Static int8 is full-integer, inputs and outputs included, as the PyTorch exporter's
(exporters/tflite.py): the converter calibrates activation ranges on the calibration
split through its representative dataset, min-max being the one method it offers; a
model with an op it can only keep in float is refused unless the quantize stage says
`strict_int8 = false`.
"""

from __future__ import annotations

import numpy as np

from edgepack.errors import ToolchainError
from edgepack.exporters import converting

CONVERTERS = {"keras": "tensorflow.lite.TFLiteConverter.from_keras_model",
              "saved_model": "tensorflow.lite.TFLiteConverter.from_concrete_functions"}


def _declared_shapes(req) -> list[list[int | None]]:
    """Each input's example shape, None where a declared dynamic dim leaves it free."""
    dynamic = {(name, d.dim) for name, dims in zip(req.input_names, req.dynamic_dims) for d in dims}
    return [[None if (name, k) in dynamic else int(s) for k, s in enumerate(x.shape)]
            for name, x in zip(req.input_names, req.example)]


def _converter(tf, req):
    if req.source_kind == "saved_model":
        declared = req.module.declared_function(_declared_shapes(req), [x.dtype for x in req.example])
        return tf.lite.TFLiteConverter.from_concrete_functions([declared.get_concrete_function()], req.module.loaded)
    return tf.lite.TFLiteConverter.from_keras_model(_signature_model(req))


def _signature_model(req):
    """The Keras model behind inputs named and shaped as declared, returning a dict of the
    declared output names."""
    from edgepack.sources.keras_model import ordered_outputs, require_keras

    keras = require_keras()
    inputs = []
    for name, x, shape in zip(req.input_names, req.example, _declared_shapes(req)):
        inputs.append(keras.Input(shape=tuple(shape[1:]), batch_size=shape[0], dtype=str(x.dtype), name=name))
    out = req.module.model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return keras.Model(inputs, dict(zip(req.output_names, ordered_outputs(out, req.output_names))))


def _representative(req):
    """The calibration split, one declared batch at a time, keyed by the signature's input
    names: a list would be taken in the converted model's own input order, which for a
    concrete function is not the declared one."""
    batch = req.example[0].shape[0]
    n = len(req.calibration[0])

    def batches():
        for i in range(0, n - batch + 1, batch):
            yield {name: np.ascontiguousarray(a[i : i + batch]) for name, a in zip(req.input_names, req.calibration)}

    return batches


def _convert(req, configure) -> dict:
    import tensorflow as tf

    from edgepack.exporters.tflite import describe

    from edgepack._quiet import native_output_silenced

    with converting("tflite", "convert", "TensorFlow's converter failed"), native_output_silenced():
        converter = _converter(tf, req)
        configure(tf, converter)
        flatbuffer = converter.convert()
    req.out_path.write_bytes(flatbuffer)
    info = describe(req.out_path, with_float_ops=req.precision == "int8")
    info["converter"] = CONVERTERS[req.source_kind]
    info["dynamic_dims"] = req.dims_record()
    return info


def export_fp32(req) -> dict:
    return _convert(req, lambda tf, c: None)


def export_fp16(req) -> dict:
    def configure(tf, c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    info = _convert(req, configure)
    if not info["tensors_by_dtype"].get("float16"):
        raise ToolchainError("tflite: fp16 conversion left no float16 tensors", format="tflite", stage="convert")
    return info


def export_int8_dynamic(req) -> dict:
    """Dynamic-range int8: int8 weights, activations quantized at run time (no calibration)."""
    def configure(tf, c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        if req.options.weights == "per_tensor":
            c._experimental_disable_per_channel = True   # the converter's only per-tensor switch

    info = _convert(req, configure)
    info["weights"] = req.options.weights
    _check_int8_weights(info)
    return info


def export_int8(req) -> dict:
    opts = req.options
    full_integer = all(req.float_inputs)

    def configure(tf, c):
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = _representative(req)
        c.target_spec.supported_ops = ([tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if opts.strict_int8 else
                                       [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS])
        if full_integer:
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        if opts.weights == "per_tensor":
            c._experimental_disable_per_channel = True   # the converter's only per-tensor switch

    batch = req.example[0].shape[0]
    used = (len(req.calibration[0]) // batch) * batch
    info = _convert(req, configure)
    info.update(weights=opts.weights, keep_float=[],
                calibration={"method": "minmax", "implementation": f"{CONVERTERS[req.source_kind]} representative_dataset "
                                                                     f"(min-max over {used} samples)"})
    _check_int8_weights(info)
    if opts.strict_int8 and full_integer and info["tensors_by_dtype"].get("float32", 0) > 0:
        from edgepack.exporters.tflite import describe_ops

        raise ToolchainError(f"tflite: the converted model is not full-integer int8 (float ops: "
                             f"{describe_ops(info.get('float_ops', {}))}; tensor dtypes {info['tensors_by_dtype']}); "
                             "set strict_int8 = false in the quantize stage to build it with these ops in float",
                             format="tflite", stage="convert")
    return info


def _check_int8_weights(info: dict) -> None:
    if not info["per_channel_int8_weights"] and not info["tensors_by_dtype"].get("int8"):
        raise ToolchainError(f"tflite: the converted model holds no int8 weights (tensor dtypes {info['tensors_by_dtype']})",
                             format="tflite", stage="convert")
