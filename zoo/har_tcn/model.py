"""A temporal convolutional network (Bai, Kolter & Koltun, 2018: "An Empirical
Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling") for
human activity recognition from a phone's inertial sensors: 6 channels (tri-axial
accelerometer in m/s^2, tri-axial gyroscope in rad/s) over 128 samples at 50 Hz (2.56 s,
the window of the UCI HAR data set), 6 activities.

What sets it apart from the image models: 1-D convolutions, causal (left-only) padding,
dilations 1, 2, 4, 8 (a receptive field of 61 samples), residual connections with a 1x1
convolution where the width changes, and a mean over time. Bai et al. wrap each
convolution in weight normalisation; it is a training-time reparametrisation that
folds into the plain weight, so it is left out here (BatchNorm takes its place and
folds at export)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ACTIVITIES = ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "lying")
CHANNELS = 6
WINDOW = 128


class CausalConv1d(nn.Conv1d):
    """A convolution whose output at time t sees only inputs at t and before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = (self.kernel_size[0] - 1) * self.dilation[0]
        return super().forward(F.pad(x, (left, 0)))


class TemporalBlock(nn.Module):
    def __init__(self, inp: int, oup: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = CausalConv1d(inp, oup, kernel, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm1d(oup)
        self.conv2 = CausalConv1d(oup, oup, kernel, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(oup)
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(inp, oup, 1) if inp != oup else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.relu(self.bn1(self.conv1(x))))
        y = self.dropout(F.relu(self.bn2(self.conv2(y))))
        return F.relu(y + self.downsample(x))


class TCN(nn.Module):
    def __init__(self, channels: int = CHANNELS, widths=(32, 32, 48, 48), kernel: int = 3,
                 num_classes: int = len(ACTIVITIES), dropout: float = 0.1):
        super().__init__()
        blocks, inp = [], channels
        for i, width in enumerate(widths):
            blocks.append(TemporalBlock(inp, width, kernel, 2 ** i, dropout))
            inp = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(x).mean(2))


def build_model() -> nn.Module:
    return TCN()
