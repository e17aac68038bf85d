"""Data hooks for MobileNetV3-Small: the zoo's photos (zoo/photos.py: photographs from
four packages, 224x224 views), normalised as torchvision's
ImageNet models expect (per-channel mean/std).

The weights are seeded random (prepare.py), so classes mean nothing; each input's label
is the fp32 model's own top-1, and "accuracy" is top-1 agreement with the fp32 reference."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import photos  # noqa: E402
from packages import load_module  # noqa: E402

WEIGHTS = HERE / "weights" / "mobilenet_v3_small.safetensors"


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalise(views: np.ndarray) -> np.ndarray:
    """uint8 NxHxWx3 -> float32 Nx3xHxW."""
    return ((views.astype(np.float32) / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).copy()


@lru_cache(maxsize=1)
def _fp32_model():
    from safetensors.torch import load_file

    model = load_module(HERE / "model.py", "zoo_mobilenet_v3_small_model").build_model()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return model.eval()


def fp32_top1(x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _fp32_model()(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)


@lru_cache(maxsize=2)
def _split(split: str):
    x = normalise(photos.evaluation_views() if split == "evaluation" else photos.calibration_views())
    return x, fp32_top1(x)


def evaluation():
    """204 inputs (102 photos, the standard crop and its mirror), labelled with the fp32
    model's top-1."""
    x, y = _split("evaluation")
    return x.copy(), y.copy()


def calibration():
    """276 inputs (46 other photos x 6 views)."""
    x, y = _split("calibration")
    return x.copy(), y.copy()
