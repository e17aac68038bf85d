"""Data hooks for EfficientNet-Lite0: the zoo's photos (zoo/photos.py: scikit-image and
scikit-learn photographs, six 224x224 views each), normalised as the TensorFlow Lite
models were trained: (pixel - 127) / 128.

The photos have no ImageNet labels, so each input's label is the fp32 model's own top-1:
"accuracy" here is top-1 agreement with the fp32 reference."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import photos  # noqa: E402
from packages import load_module  # noqa: E402

WEIGHTS = HERE / "weights" / "efficientnet_lite0.safetensors"


def normalise(views: np.ndarray) -> np.ndarray:
    """uint8 NxHxWx3 -> float32 Nx3xHxW."""
    return ((views.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2).copy()


@lru_cache(maxsize=1)
def _fp32_model():
    from safetensors.torch import load_file

    model = load_module(HERE / "model.py", "zoo_efficientnet_lite0_model").build_model()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return model.eval()


def fp32_top1(x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _fp32_model()(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)


@lru_cache(maxsize=2)
def _split(names: tuple[str, ...]):
    x = normalise(photos.photo_views(names))
    return x, fp32_top1(x)


def evaluation():
    """42 inputs (7 photos x 6 views), labelled with the fp32 model's top-1."""
    x, y = _split(photos.EVALUATION_PHOTOS)
    return x.copy(), y.copy()


def calibration():
    """72 inputs (12 other photos x 6 views)."""
    x, y = _split(photos.CALIBRATION_PHOTOS)
    return x.copy(), y.copy()
