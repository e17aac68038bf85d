"""torchao's XNNPACKQuantizer (ExecuTorch's int8, and the torch-side model of it that
sensitivity and keep_float = "auto" search on), with a convolution or linear layer and
the ReLU6 after it quantized as one op (`_clamp_fusion`)."""

from __future__ import annotations


def quantizer():
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as utils
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    from edgepack.exporters._clamp_fusion import annotate_conv_clamp

    class _Quantizer(XNNPACKQuantizer):
        def annotate(self, model):
            # Only the global config is used by edgepack (keep_float goes through the
            # filter function), so the pattern is annotated with it, under that filter.
            annotate_conv_clamp(model, self.global_config, utils, self.filter_fn)
            return super().annotate(model)

    return _Quantizer()
