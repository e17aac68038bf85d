"""Keeping modules float in the PT2E quantizers (ExecuTorch; LiteRT refuses).

Both quantizers document `set_module_name(name, None)` for this and both refuse it
("quantization_config == None is not supported yet": torchao 0.18's XNNPACKQuantizer and
litert-torch 0.10's PT2EQuantizer alike).

- XNNPACKQuantizer has `set_filter_function`, public, applied to every pattern it
  annotates: nodes inside a kept module fail it and stay float (a pattern such as
  conv + ReLU is skipped whole when any of its nodes fails).
- litert-torch's PT2EQuantizer has no filter. Its module-name filter parses the keys of
  each node's `nn_module_stack` in the form Dynamo gave them before torch 2.5, which torch
  2.13 no longer writes; and with those keys rewritten the module is left unannotated, but
  the converted .tflite still holds no float tensor. So a LiteRT artifact with keep_float
  is refused with that reason rather than shipped int8 under a keep_float it ignored.
"""

from __future__ import annotations

from edgepack.errors import ToolchainError


def keep_modules_float(quantizer, names, fmt: str) -> None:
    names = tuple(names)
    if not names:
        return
    if not hasattr(quantizer, "set_filter_function"):
        raise ToolchainError(f"{fmt}: keep_float {list(names)} cannot be honoured: litert-torch's quantizer refuses "
                             "set_module_name(name, None) and its converter quantizes every layer; drop the tflite "
                             "artifact or keep_float", format=fmt, stage="quantize")
    from torchao.quantization.pt2e.quantizer import get_module_name_filter

    kept = [get_module_name_filter(n) for n in names]
    quantizer.set_filter_function(lambda node: not any(f(node) for f in kept))
