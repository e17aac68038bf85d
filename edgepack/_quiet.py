"""Keeping the toolchains' console chatter (TensorFlow/absl logs, torch and torchao
warnings) out of a user's terminal: edgepack reports what matters itself."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def native_output_silenced():
    """Nothing written to fd 1 or 2 while the block runs: TensorFlow's converter prints
    its signature listing and C++ log lines ("fully_quantize: ...") from code that no
    Python-level redirect reaches. What the block raises still propagates."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
            try:
                yield
            finally:
                sink.close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
