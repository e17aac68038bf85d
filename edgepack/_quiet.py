"""Keeping the toolchains' console chatter (TensorFlow/absl logs, torch and torchao
warnings) out of a user's terminal: edgepack reports what matters itself."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_toolchains() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("torch", "torchao", "executorch", "absl", "tensorflow", "litert_torch", "ai_edge_quantizer", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_torch_loggers() -> None:
    """torch configures some of its loggers with levels of their own (torch._logging), so
    the "torch" logger's level does not reach them: a failed capture logs pages of graph
    code from torch.fx.experimental.symbolic_shapes. Call after torch is imported."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("torch") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)
