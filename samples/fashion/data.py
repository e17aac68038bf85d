"""Data hooks for the fashion sample: Zalando's Fashion-MNIST (28x28 grayscale, 10 classes)
as Debian's dataset-fashion-mnist package installs it, read with numpy and gzip so no
download and no torchvision is needed.

The split is fixed by position, not by a random permutation, so it cannot change with a
numpy release: the official 60,000 training images are already shuffled and every class
keeps 8-11% of each slice.

    training      official train[:54000]        54,000
    validation    official train[54000:59000]    5,000
    calibration   official train[59000:]         1,000
    evaluation    official test set             10,000
"""

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install -y dataset-fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_TRAIN, _VALIDATION = 54_000, 5_000
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


def _read(name: str, magic: int, dims: int) -> np.ndarray:
    path = ROOT / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the fashion sample reads Debian's Fashion-MNIST package: {INSTALL}")
    raw = gzip.decompress(path.read_bytes())
    header = np.frombuffer(raw, dtype=">u4", count=1 + dims)
    # A truncated or foreign file must fail here, not as a silently misshapen array.
    if header[0] != magic:
        raise ValueError(f"{path}: idx magic {header[0]:#010x}, expected {magic:#010x}")
    shape = tuple(int(d) for d in header[1:])
    offset = 4 * (1 + dims)
    if len(raw) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(raw) - offset} data bytes, header says shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


@lru_cache(maxsize=2)
def _official(part: str) -> tuple[np.ndarray, np.ndarray]:
    images = _read(f"{part}-images-idx3-ubyte.gz", _IMAGES_MAGIC, 3)
    labels = _read(f"{part}-labels-idx1-ubyte.gz", _LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise ValueError(f"{ROOT}: {len(images)} {part} images but {len(labels)} labels")
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]  # N, 1, 28, 28 in [0, 1]
    return x, labels.astype(np.int64)


def training():
    x, y = _official("train")
    return x[:_TRAIN], y[:_TRAIN]


def validation():
    x, y = _official("train")
    return x[_TRAIN:_TRAIN + _VALIDATION], y[_TRAIN:_TRAIN + _VALIDATION]


def calibration():
    x, y = _official("train")
    return x[_TRAIN + _VALIDATION:], y[_TRAIN + _VALIDATION:]


def evaluation():
    return _official("t10k")
