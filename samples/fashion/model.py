"""Two CNNs for Fashion-MNIST: a compact student to ship to a device and a much larger
teacher whose softened outputs train it (knowledge distillation).

Both pool after every block because at 28x28 full-resolution convolutions dominate MACs
and latency on a phone CPU; the parameters, and the capacity, sit in the cheaper 14x14
and 7x7 stages and the head. The teacher is the same shape at twice the width, so a
structured-pruned teacher and the student are directly comparable.
"""

from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm that follows has its own shift, and folding BN into the
    # conv at export gives the conv its bias back.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class FashionNet(nn.Module):
    """Conv-BN-ReLU stages at 28, 14 and 7 pixels, then a small MLP head on a 3x3 map."""

    def __init__(self, widths: tuple[int, int, int], *, hidden: int, classes: int = 10, dropout: float = 0.2):
        super().__init__()
        w1, w2, w3 = widths
        layers = _block(1, w1) + [nn.MaxPool2d(2)]  # 28 -> 14
        layers += _block(w1, w2) + [nn.MaxPool2d(2)]  # 14 -> 7
        layers += _block(w2, w3) + [nn.MaxPool2d(2)]  # 7 -> 3
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(w3 * 3 * 3, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def build_model() -> nn.Module:
    """The factory edgepack.toml names: the untrained student, weights loaded separately."""
    return FashionNet((16, 32, 64), hidden=64)


def build_teacher() -> nn.Module:
    """The distillation teacher: twice the student's width, about 6x its parameters and 4x its MACs."""
    return FashionNet((32, 64, 128), hidden=256, dropout=0.3)
