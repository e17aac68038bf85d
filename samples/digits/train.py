"""Train the digits sample deterministically and write weights/digits.safetensors.

    python samples/digits/train.py        # about 10-20 s on 2 cores
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import evaluation, training  # noqa: E402
from model import build_model  # noqa: E402

EPOCHS = 40
BATCH = 64


def main() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # bitwise-reproducible across machines with the same torch
    x, y = map(torch.from_numpy, training())
    xt, yt = map(torch.from_numpy, evaluation())
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=EPOCHS * ((len(x) + BATCH - 1) // BATCH))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    out = HERE / "weights" / "digits.safetensors"
    out.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    print(f"test accuracy {acc * 100:.2f}% on {len(xt)} images; {time.perf_counter() - start:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
