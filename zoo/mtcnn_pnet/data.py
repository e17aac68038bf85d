"""Data hooks for MTCNN's P-Net: the 200 grey 25x25 crops of scikit-image's
`lfw_subset` (100 faces from Labeled Faces in the Wild, then 100 non-face patches),
scaled to 48x48 and replicated to three channels. P-Net is fully convolutional: on
48x48 it gives 19x19 maps, one cell per 12x12 window at a stride of 2. Labels are the
ground truth of each crop (1 face, 0 not), kept for the hook contract; the maps have
no per-cell truth. Evaluation and calibration take different halves of each class."""

from __future__ import annotations

import numpy as np

SIZE = 48


def crops(size: int = SIZE) -> np.ndarray:
    """float32 200 x 3 x size x size, (pixel - 127.5) / 128; the first 100 are faces."""
    import skimage.data
    from PIL import Image

    grey = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    scaled = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in grey])
    x = (scaled.astype(np.float32) - 127.5) / 128.0
    return np.repeat(x[:, None], 3, axis=1)


def _split(first: slice, second: slice):
    x = crops()
    labels = (np.arange(200) < 100).astype(np.int64)
    idx = np.r_[np.arange(200)[first], np.arange(200)[second]]
    return x[idx].copy(), labels[idx].copy()


def evaluation():
    """100 crops: faces 0-49 and non-faces 100-149."""
    return _split(slice(0, 50), slice(100, 150))


def calibration():
    """100 other crops: faces 50-99 and non-faces 150-199."""
    return _split(slice(50, 100), slice(150, 200))
