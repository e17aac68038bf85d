"""Real photographs that ship inside installed packages (scikit-image's `skimage.data`,
scikit-learn's `load_sample_images`), cut into ImageNet-style evaluation views, for the
zoo's image classifiers. Each project normalises the views its own way.

Evaluation and calibration photos are disjoint, so int8 ranges are never fitted on the
images they are judged on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# ImageNet-like subjects: a cat, a cup of coffee, an astronaut, a rocket, a motorcycle,
# a Chinese temple, a flower.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower")
# Scenes and textures whose activation statistics are those of natural images.
CALIBRATION_PHOTOS = ("hubble_deep_field", "camera", "coins", "moon", "brick", "grass", "gravel",
                      "retina", "immunohistochemistry", "motorcycle_right", "text", "page")


def photo(name: str) -> np.ndarray:
    """uint8 HxWx3 (grey photos replicated to three channels)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        img = images.images[[Path(f).stem for f in images.filenames].index(name)]
    else:
        import skimage.data

        if name in ("motorcycle", "motorcycle_right"):
            img = skimage.data.stereo_motorcycle()[0 if name == "motorcycle" else 1]
        else:
            img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)


def _resize_shorter(img: np.ndarray, shorter: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    scale = shorter / min(h, w)
    size = (max(shorter, round(w * scale)), max(shorter, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


def views(img: np.ndarray, size: int = 224) -> list[np.ndarray]:
    """Six uint8 size x size x 3 views: the standard evaluation crop (shorter side
    size*8/7, centre crop) and its mirror, the whole photo's centre, a closer centre
    crop, two off-centre crops."""

    def crop(a: np.ndarray, top: int, left: int) -> np.ndarray:
        return np.ascontiguousarray(a[top: top + size, left: left + size])

    def centre(a: np.ndarray) -> np.ndarray:
        return crop(a, (a.shape[0] - size) // 2, (a.shape[1] - size) // 2)

    std = _resize_shorter(img, round(size * 8 / 7))
    h, w = std.shape[:2]
    c = centre(std)
    return [c, np.ascontiguousarray(c[:, ::-1]), centre(_resize_shorter(img, size)),
            centre(_resize_shorter(img, round(size * 10 / 7))), crop(std, 0, 0), crop(std, h - size, w - size)]


def photo_views(names: tuple[str, ...], size: int = 224) -> np.ndarray:
    """uint8 N x size x size x 3."""
    return np.stack([v for name in names for v in views(photo(name), size)])
