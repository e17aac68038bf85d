"""Data hooks for the Keras digits sample: scikit-learn's bundled 8x8 digits (1797
images, no download), channels last as Keras lays images out, split once with a fixed
seed into train / calibration / test."""

from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 20261203


@lru_cache(maxsize=1)
def _splits():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, :, :, None]  # N, 8, 8, 1 in [0, 1]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.30, random_state=SEED, stratify=y)
    x_train, x_cal, y_train, y_cal = train_test_split(x_rest, y_rest, test_size=180, random_state=SEED, stratify=y_rest)
    return {"train": (x_train, y_train), "calibration": (x_cal, y_cal), "test": (x_test, y_test)}


def training():
    return _splits()["train"]


def calibration():
    return _splits()["calibration"]


def evaluation():
    return _splits()["test"]
