"""Train the activity-recognition TCN on the synthesised sensor windows of data.py and
write weights/har_tcn.safetensors.

    python zoo/har_tcn/prepare.py

No installable package ships a pretrained human-activity (or other sensor) model in a
form this architecture maps to, so the weights are trained here: seeded, one thread,
Adam, 12 epochs over 2,400 windows (about a minute of one core). The same file every run."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from packages import load_module, save_weights  # noqa: E402

SEED = 2018
EPOCHS = 12
OUT = HERE / "weights" / "har_tcn.safetensors"


def main() -> int:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = load_module(HERE / "model.py", "zoo_har_tcn_model").build_model()
    data = load_module(HERE / "data.py", "zoo_har_tcn_data")
    x, y = (torch.from_numpy(a) for a in data.training())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    xe, ye = data.evaluation()
    with torch.no_grad():
        acc = (model(torch.from_numpy(xe)).argmax(1).numpy() == ye).mean()
    save_weights(model, OUT, source="trained on data.py's synthesised windows (no pretrained weights ship offline)",
                 source_sha256="-", extra={"seed": str(SEED), "epochs": str(EPOCHS), "evaluation_accuracy": f"{acc:.4f}"})
    print(f"evaluation accuracy {acc:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
