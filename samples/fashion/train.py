"""Train the fashion sample's student and teacher deterministically and write
weights/fashion.safetensors (student) and weights/teacher.safetensors.

    python samples/fashion/train.py            # both models, about 6 minutes on one core
    python samples/fashion/train.py teacher    # only the named ones

One thread and a fixed seed per model make the weights bitwise-reproducible on a
machine with the same torch build and CPU instruction set; each model reseeds, so
changing one model's recipe leaves the other's weights unchanged.
"""

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import evaluation, training  # noqa: E402
from model import build_model, build_teacher  # noqa: E402

BATCH = 128
# Epoch counts fit the whole script into about 6 minutes of CPU on one core (student 91.4%,
# teacher 92.8% on the test set); each further epoch costs about 16 s (student) or 40 s
# (teacher) of CPU and buys little accuracy.
RECIPES = {
    "fashion": dict(factory=build_model, epochs=5, lr=4e-3),
    "teacher": dict(factory=build_teacher, epochs=6, lr=3e-3),
}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        # Batches keep the teacher's activations for 10,000 images out of memory.
        hits = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(1000), y.split(1000)))
    return hits / len(y)


def fit(name: str, *, factory, epochs: int, lr: float, x, y, xt, yt) -> None:
    torch.manual_seed(0)
    model = factory()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    start, cpu = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            xb = x[idx]
            # Horizontal flips: clothes are left-right symmetric, so this doubles the
            # data for free and is worth a few tenths of a point on the test set.
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            opt.zero_grad()
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
        print(f"  {name} epoch {epoch + 1}/{epochs}: {time.perf_counter() - start:.0f} s", flush=True)
    acc = accuracy(model, xt, yt)
    params = sum(p.numel() for p in model.parameters())
    out = HERE / "weights" / f"{name}.safetensors"
    out.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    print(f"{name}: {params:,} params, test accuracy {acc * 100:.2f}% on {len(yt)} images; "
          f"{epochs} epochs in {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s CPU); wrote {out}", flush=True)


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise SystemExit(f"unknown model {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    x, y = map(torch.from_numpy, training())
    xt, yt = map(torch.from_numpy, evaluation())
    start, cpu = time.perf_counter(), time.process_time()
    for name in names or RECIPES:
        fit(name, **RECIPES[name], x=x, y=y, xt=xt, yt=yt)
    print(f"total {time.perf_counter() - start:.1f} s ({time.process_time() - cpu:.1f} s CPU)")


if __name__ == "__main__":
    main(sys.argv[1:])
