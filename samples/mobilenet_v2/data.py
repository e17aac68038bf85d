"""Data hooks for the MobileNetV2 sample: real photographs that ship inside installed
packages (scikit-image's `skimage.data`, scikit-learn's `load_sample_images`), so the
sample runs offline with no data set download.

Preprocessing is torchvision's ImageNet evaluation transform: shorter side resized to
256 (bilinear, antialiased), 224x224 centre crop, per-channel mean/std normalisation.
A handful of views per photo (crops at other scales and positions, mirror images) turns
a dozen photos into a few dozen inputs.

There are no ImageNet ground-truth labels for these photos, so the label of each input
is the fp32 model's own top-1 class: "accuracy" on these splits is top-1 agreement with
the fp32 reference, which is exactly what a compression or export must preserve.

Evaluation and calibration use disjoint photos, so int8 ranges are never fitted on the
images they are judged on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = 224
RESIZE = 256
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

# Colour photographs of ImageNet-like subjects: a cat, a cup of coffee, an astronaut, a
# rocket, a motorcycle, a Chinese temple, a flower.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower")
# Other photographs (grey ones are replicated to three channels): scenes and textures
# whose activation statistics are those of natural images.
CALIBRATION_PHOTOS = ("hubble_deep_field", "camera", "coins", "moon", "brick", "grass", "gravel",
                      "retina", "immunohistochemistry", "motorcycle_right", "text", "page")


def _photo(name: str) -> np.ndarray:
    """uint8 HxWx3."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        index = [Path(f).stem for f in images.filenames].index(f"{name}")
        img = images.images[index]
    else:
        import skimage.data

        if name == "motorcycle":
            img = skimage.data.stereo_motorcycle()[0]
        elif name == "motorcycle_right":
            img = skimage.data.stereo_motorcycle()[1]
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


def _crop(img: np.ndarray, top: int, left: int) -> np.ndarray:
    return img[top: top + SIZE, left: left + SIZE]


def _normalise(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet mean/std."""
    x = img.astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def views(img: np.ndarray) -> list[np.ndarray]:
    """Six 224x224 views: the standard centre crop and its mirror, the whole photo's
    centre (shorter side 224), a closer centre crop (shorter side 320), and two
    off-centre crops at the standard scale."""
    out = []
    std = _resize_shorter(img, RESIZE)
    h, w = std.shape[:2]
    centre = _crop(std, (h - SIZE) // 2, (w - SIZE) // 2)
    out += [centre, centre[:, ::-1]]
    whole = _resize_shorter(img, SIZE)
    out.append(_crop(whole, (whole.shape[0] - SIZE) // 2, (whole.shape[1] - SIZE) // 2))
    close = _resize_shorter(img, 320)
    out.append(_crop(close, (close.shape[0] - SIZE) // 2, (close.shape[1] - SIZE) // 2))
    out.append(_crop(std, 0, 0))
    out.append(_crop(std, h - SIZE, w - SIZE))
    return [_normalise(np.ascontiguousarray(v)) for v in out]


def preprocess(img: np.ndarray) -> np.ndarray:
    """The standard evaluation transform alone: 1x3x224x224."""
    return views(img)[0][None]


def photos(names: tuple[str, ...]) -> np.ndarray:
    return np.stack([v for name in names for v in views(_photo(name))]).astype(np.float32)


@lru_cache(maxsize=1)
def _fp32_model():
    import importlib.util

    import torch
    from safetensors.torch import load_file

    # model.py beside this file, by path: a bare `import model` would pick up whichever
    # project's model.py a long-lived process imported first.
    spec = importlib.util.spec_from_file_location("mobilenet_v2_sample_model", HERE / "model.py")
    model_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_py)
    model = model_py.build_model()
    model.load_state_dict(load_file(str(HERE / "weights" / "mobilenet_v2.safetensors")), strict=True)
    model.eval()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return model


def fp32_top1(x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _fp32_model()(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)


@lru_cache(maxsize=1)
def _evaluation():
    x = photos(EVALUATION_PHOTOS)
    return x, fp32_top1(x)


@lru_cache(maxsize=1)
def _calibration():
    x = photos(CALIBRATION_PHOTOS)
    return x, fp32_top1(x)


def evaluation():
    """42 inputs (7 photos x 6 views); labels are the fp32 model's top-1."""
    x, y = _evaluation()
    return x.copy(), y.copy()


def calibration():
    """72 inputs (12 photos x 6 views); labels are the fp32 model's top-1 (unused by
    quantization, required by the hook contract)."""
    x, y = _calibration()
    return x.copy(), y.copy()
