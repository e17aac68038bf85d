"""Data hooks for the MobileNetV2 sample: a few hundred photographs that ship in packages,
so the sample runs offline with no data set download.

    evaluation    273 photographic stamps of Tux Paint + 7 colour photos        280 images
    calibration    90 other stamps + 12 other photos                            102 images

The stamps are Debian's tuxpaint-stamps-default (GPL-2, /usr/share/tuxpaint/stamps):
photographs of single objects (animals, fruit and vegetables, instruments, tools,
vehicles, household things, ...) cut out on a transparent background, composited here on
white and padded to a square, the way product photos in ImageNet look. Drawings are left
out: the cartoon folders, letters, symbols, road signs, flags and the holiday clip art.
Mirror-image copies of another stamp are left out too, so every input is a distinct image.
The photos are scikit-image's `skimage.data` and scikit-learn's `load_sample_images`
(natural scenes: a cat, a cup, a rocket, a temple, ...).

Preprocessing is torchvision's ImageNet evaluation transform: shorter side resized to
256 (bilinear, antialiased), 224x224 centre crop, per-channel mean/std normalisation.

No package found on the reachable registries ships ImageNet-labelled photos in the
hundreds, and only about a third of the stamps name one ImageNet class unambiguously, so
the label of each input is the fp32 model's own top-1 class: "accuracy" on these splits is
top-1 agreement with the fp32 reference, which is what a compression or export must
preserve.

Evaluation and calibration are disjoint images, split by position in the sorted stamp
list (every fourth stamp calibrates), so int8 ranges are never fitted on the images they
are judged on and both splits cover every folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAMPS = Path("/usr/share/tuxpaint/stamps")
INSTALL = "apt-get install -y tuxpaint-stamps-default"
SIZE = 224
RESIZE = 256
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

# Folders (relative to STAMPS) of drawings rather than photographs.
DRAWN = ("symbols/", "town/roadsigns/", "town/flags/", "seasonal/hanukkah/", "seasonal/easter/",
         "seasonal/newyears/", "seasonal/halloween/", "naturalforces/lightningbolt")
CALIBRATION_EVERY = 4   # stamp i calibrates when i % 4 == 3, the others evaluate

# The stamps one ImageNet-1k class names without doubt (index: torchvision's class order),
# for a ground-truth check of the fp32 model: generic names ("duck", "squirrel", "deer")
# and species ImageNet lacks ("little penguin", "giraffe") are left out.
IMAGENET_CLASS = {
    "animals/birds/albino_peahen.png": 84, "animals/birds/crowned_crane.png": 134,
    "animals/birds/gander.png": 99, "animals/birds/hen.png": 8, "animals/birds/magpie.png": 18,
    "animals/birds/ostrich.png": 9, "animals/birds/peacock.png": 84, "animals/birds/pelican.png": 144,
    "animals/birds/pink_flamingo.png": 130, "animals/birds/rainbow-lorikeet.png": 90,
    "animals/birds/rooster.png": 7, "animals/birds/tucan.png": 96, "animals/birds/vulture.png": 23,
    "animals/fish/clownfish.png": 393, "animals/fish/lionfish.png": 396,
    "animals/insects/Brown_slug.png": 114, "animals/insects/Woodlouse.png": 126,
    "animals/insects/bee.png": 309, "animals/insects/fly.png": 308, "animals/insects/grasshopper.png": 311,
    "animals/insects/mantis.png": 315, "animals/lizards/iguana.png": 39,
    "animals/mammals/apes/chimp.png": 367, "animals/mammals/apes/gorilla.png": 366,
    "animals/mammals/aquatic/orca.png": 148, "animals/mammals/aquatic/otter.png": 360,
    "animals/mammals/aquatic/sea_lion.png": 150, "animals/mammals/badger.png": 362,
    "animals/mammals/bears/european-bear.png": 294, "animals/mammals/bears/toys/edward_bear.png": 850,
    "animals/mammals/bovines/bison.png": 347, "animals/mammals/bovines/bull.png": 345,
    "animals/mammals/bovines/cow.png": 345, "animals/mammals/bovines/cow_white.png": 345,
    "animals/mammals/bovines/ram.png": 348, "animals/mammals/bovines/sheep.png": 348,
    "animals/mammals/camel/dromedary.png": 354, "animals/mammals/cats/lion-2.png": 291,
    "animals/mammals/cats/lion.png": 291, "animals/mammals/cats/tiger.png": 292,
    "animals/mammals/cats/tiger_sumatran.png": 292, "animals/mammals/dogs/dingo.png": 273,
    "animals/mammals/echidna.png": 102, "animals/mammals/equines/zebra.png": 340,
    "animals/mammals/hippopotamus.png": 344, "animals/mammals/pig.png": 341,
    "animals/mammals/pig_golden.png": 341, "animals/mammals/pig_golden2.png": 341,
    "animals/mammals/rodents/beaver.png": 337, "animals/mammals/rodents/marmot.png": 336,
    "animals/mammals/wildboar.png": 342, "animals/marsupials/kangaroo.png": 104,
    "animals/marsupials/koala.png": 105, "animals/marsupials/wombat.png": 106,
    "clothes/hats/sombrero.png": 808, "clothes/t_sock.png": 806, "clothes/t_tshirt.png": 610,
    "food/fruit/Strawberry2.png": 949, "food/fruit/strawberry.png": 949,
    "food/fruit/apple_granny_smith.png": 948, "food/fruit/banana.png": 954,
    "food/fruit/cherimoya.png": 956, "food/fruit/lemon.png": 951, "food/fruit/orange.png": 950,
    "food/fruit/sliced_orange.png": 950, "food/fruit/pineapple.png": 953,
    "food/fruit/pomegranate.png": 957, "food/pizza.png": 963, "food/vegetables/broccoli.png": 937,
    "food/vegetables/pepper.png": 945, "food/vegetables/yellowpepper.png": 945,
    "food/vegetables/mushroom.png": 947, "hobbies/binoculars.png": 447,
    "hobbies/camera_35mm.png": 759, "hobbies/music/brass/trumpet.png": 513,
    "hobbies/music/percussion/drum_tomtom_floor.png": 541, "hobbies/music/string/cello.png": 486,
    "hobbies/music/string/guitar_classical.png": 402, "hobbies/music/string/guitar_electric.png": 546,
    "hobbies/music/string/violin.png": 889, "hobbies/music/wind/bassoon.png": 432,
    "household/dishes/mug.png": 504, "household/dishes/teapot.png": 849,
    "household/garbagecan.png": 412, "household/wheelie_bin.png": 412, "household/toilet.png": 861,
    "household/tools/hammer.png": 587, "household/tools/paintbrush_large.png": 696,
    "household/tools/spade.png": 792, "medical/bandage_adhesive.png": 419,
    "medical/stethoscope.png": 823, "medical/syringe.png": 845, "military/paratrooper.png": 701,
    "military/vehicles/bradley.png": 847, "military/vehicles/f22_raptor.png": 895,
    "plants/mushrooms/cep-1.png": 997, "plants/mushrooms/cep-2.png": 997, "plants/mushrooms/cep.png": 997,
    "seasonal/candle.png": 470, "seasonal/christmas/stocking.png": 496, "sports/basketball.png": 430,
    "sports/soccer.png": 805, "sports/tennis_ball.png": 852, "sports/tennis_racket.png": 752,
    "town/uk_post_box.png": 637, "town/usps_mailbox.png": 637, "vehicles/7spoke256.png": 479,
    "vehicles/auto/sportscar2.png": 817, "vehicles/auto/truck.png": 717,
    "vehicles/cycle/pink_tricycle.png": 870, "vehicles/emergency/firetruck.png": 555,
    "vehicles/flight/balloon360.png": 417, "vehicles/flight/planes/747.png": 404,
    "vehicles/garbagetruck.png": 569, "vehicles/race/indycar.png": 751,
}

# Colour photographs of ImageNet-like subjects: a cat, a cup of coffee, an astronaut, a
# rocket, a motorcycle, a Chinese temple, a flower.
EVALUATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower")
# Other photographs (grey ones are replicated to three channels): scenes and textures
# whose activation statistics are those of natural images.
CALIBRATION_PHOTOS = ("hubble_deep_field", "camera", "coins", "moon", "brick", "grass", "gravel",
                      "retina", "immunohistochemistry", "motorcycle_right", "text", "page")


def stamp_paths() -> list[Path]:
    """The photographic stamps, sorted, mirror copies left out."""
    if not STAMPS.is_dir():
        raise FileNotFoundError(f"{STAMPS} not found; the mobilenet_v2 sample evaluates on Debian's "
                                f"Tux Paint stamps: {INSTALL}")
    paths = []
    for path in sorted(STAMPS.rglob("*.png")):
        rel = path.relative_to(STAMPS).as_posix()
        if "cartoon" in rel.split("/") or rel.startswith(DRAWN) or path.stem.endswith("_mirror"):
            continue
        paths.append(path)
    return paths


def split_stamps() -> tuple[list[Path], list[Path]]:
    """(evaluation, calibration) stamps: disjoint, each spread over every folder."""
    paths = stamp_paths()
    evaluation = [p for i, p in enumerate(paths) if i % CALIBRATION_EVERY != CALIBRATION_EVERY - 1]
    calibration = [p for i, p in enumerate(paths) if i % CALIBRATION_EVERY == CALIBRATION_EVERY - 1]
    return evaluation, calibration


def _stamp(path: Path) -> np.ndarray:
    """uint8 HxWx3: the cut-out composited on white, padded to a square so the centre
    crop keeps the whole object."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    side = max(rgba.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return np.asarray(canvas.convert("RGB"))


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


def _normalise(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet mean/std."""
    x = img.astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def transform(img: np.ndarray) -> np.ndarray:
    """torchvision's ImageNet evaluation transform: uint8 HxWx3 -> float32 3x224x224."""
    std = _resize_shorter(img, RESIZE)
    h, w = std.shape[:2]
    top, left = (h - SIZE) // 2, (w - SIZE) // 2
    return _normalise(np.ascontiguousarray(std[top: top + SIZE, left: left + SIZE]))


def preprocess(img: np.ndarray) -> np.ndarray:
    """One image as the model takes it: 1x3x224x224."""
    return transform(img)[None]


def _inputs(stamps: list[Path], photos: tuple[str, ...]) -> np.ndarray:
    images = [_stamp(p) for p in stamps] + [_photo(name) for name in photos]
    return np.stack([transform(img) for img in images]).astype(np.float32)


def labelled() -> tuple[np.ndarray, np.ndarray]:
    """The stamps of IMAGENET_CLASS, from both splits, with their ImageNet classes."""
    paths = [STAMPS / rel for rel in IMAGENET_CLASS]
    if not STAMPS.is_dir():
        stamp_paths()  # raises with the install command
    x = np.stack([transform(_stamp(p)) for p in paths]).astype(np.float32)
    return x, np.array(list(IMAGENET_CLASS.values()), np.int64)


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
    return model


def fp32_top1(x: np.ndarray) -> np.ndarray:
    import torch

    # Channels-last weights: oneDNN's depthwise convolutions run far faster so on x86.
    model = _fp32_model().to(memory_format=torch.channels_last)
    with torch.no_grad():
        # In slices of 8: the whole split at once would hold gigabytes of activations, and
        # small slices keep them in the caches (2.7x faster than slices of 256 here).
        return np.concatenate([model(torch.from_numpy(x[i: i + 8])).argmax(1).numpy()
                               for i in range(0, len(x), 8)]).astype(np.int64)


@lru_cache(maxsize=1)
def _evaluation():
    x = _inputs(split_stamps()[0], EVALUATION_PHOTOS)
    return x, fp32_top1(x)


@lru_cache(maxsize=1)
def _calibration():
    x = _inputs(split_stamps()[1], CALIBRATION_PHOTOS)
    return x, fp32_top1(x)


def evaluation():
    """280 distinct images (273 stamps + 7 photos); labels are the fp32 model's top-1."""
    x, y = _evaluation()
    return x.copy(), y.copy()


def calibration():
    """102 other images (90 stamps + 12 photos); labels are the fp32 model's top-1 (unused
    by quantization, required by the hook contract)."""
    x, y = _calibration()
    return x.copy(), y.copy()
