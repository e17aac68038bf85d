"""Write model.onnx: the digits sample's trained CNN (samples/digits) as a vendor would
hand it over, one self-contained fp32 ONNX file with a dynamic batch.

    python samples/onnx_digits/make_model.py
"""

import sys
from pathlib import Path

import onnx
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"
sys.path.insert(0, str(DIGITS))

from model import build_model  # noqa: E402


def main() -> None:
    model = build_model()
    model.load_state_dict(load_file(str(DIGITS / "weights" / "digits.safetensors")))
    model.eval()
    out = HERE / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(out), dynamo=True, external_data=False,
                      input_names=["pixels"], output_names=["scores"], dynamic_shapes=({0: batch},))
    proto = onnx.load_model(str(out))
    for node in proto.graph.node:       # no exporter debug metadata in a shipped file
        del node.metadata_props[:]
    onnx.save_model(proto, str(out))
    onnx.checker.check_model(str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
